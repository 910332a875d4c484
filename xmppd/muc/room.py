"""The room core: occupants, roles, affiliations, and routing inside a room.

Everything optional (room options) lives in ``xmppd/muc/features/`` and is
reached through the events of :mod:`xmppd.muc.hooks`. This module keeps:

* the occupant table (nick -> :class:`Occupant`, real full JID -> Occupant),
* affiliations (bare JID -> str) with their data (reason, reserved nick),
* presence handling (join, update, nick change, leave, probe, error-kick),
* groupchat and private messages, IQs to occupants,
* role and affiliation changes with their broadcasts (XEP-0045 §9, §10),
* the broadcast primitives: an occupant's presence is built once per
  variant (full JID / anonymous / self) and fanned out with
  ``router.route_many``; a groupchat message is built once.

Strings everywhere (room JID, nicks, real JIDs): no JID objects in tables.
"""
import base64
import copy
import hashlib
import hmac
import os
import uuid

from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish.domish import Element

from xmppd import jid as jidlib
from xmppd.metrics import STATS
from xmppd.muc.errors import error_reply, stanza_error
from xmppd.muc.hooks import Event, Feature

log = Logger()

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_DELAY = "urn:xmpp:delay"
NS_DATA = "jabber:x:data"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"

ROLES = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
AFFILIATIONS = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}

CORE_DEFAULTS = {
    "name": "",
    "persistent": False,
    "public": False,          # Prosody's default: rooms are hidden until made public
    "members_only": False,
    "moderated": False,
    "whois": "moderators",
    "password": "",
    "max_users": 0,
    "presence_broadcast": ["moderator", "participant", "visitor"],
    "allow_pm": "anyone",
    "changesubject": False,
    "allow_invites": False,
    "history_length": 20,
    "subject": "",
    "subject_from": "",
    "locked": False,
}

_MUC_X = {(NS_MUC, "x"), (NS_USER, "x")}
# what a client's presence must never carry into a broadcast: the MUC's own elements,
# and an occupant-id (XEP-0421 §4: the service replaces it; it cannot be forged)
_SERVER_OWNED = _MUC_X | {(NS_OCCUPANT_ID, "occupant-id")}


class Occupant:
    """One occupant: a nick held by a user, from one or more sessions (full JIDs).

    Several resources of the same user may share a nick (as Prosody allows):
    ``sessions`` maps each full JID to the payload of its last presence, in
    join order; ``jid``/``payload`` are the primary (first) session's, which
    is what other occupants see.
    """

    __slots__ = ("nick", "jid", "bare", "role", "room_jid", "payload", "available", "cache",
                 "sessions", "occupant_id", "stamp")

    def __init__(self, room_jid, nick, jid, bare, role):
        self.nick = nick
        self.jid = jid
        self.bare = bare
        self.role = role
        self.room_jid = room_jid + "/" + nick
        self.payload = ""        # serialised children of the last presence (no MUC x)
        self.available = True
        self.cache = None        # {with_jid: (head, tail)} of its occupant-list presence
        self.sessions = {jid: ""}
        # XEP-0421, set by the occupant_id feature at join: the id, and the serialised
        # element every presence of this occupant carries (built once, not per copy)
        self.occupant_id = None
        self.stamp = ""

    def set_payload(self, jid, payload):
        self.sessions[jid] = payload
        if jid == self.jid:
            self.payload = payload

    def drop_session(self, jid):
        """Forget one of several sessions; the next one becomes primary if needed."""
        del self.sessions[jid]
        if jid == self.jid:
            self.jid = next(iter(self.sessions))
            self.payload = self.sessions[self.jid]

    def __repr__(self):
        return f"<Occupant {self.room_jid} {self.jid} {self.role}>"


def presence_payload(stanza):
    """Serialise the presence children we repeat in broadcasts (not the MUC x)."""
    parts = []
    for child in stanza.elements():
        if (child.uri, child.name) in _SERVER_OWNED:
            continue
        parts.append(child.toXml(defaultUri=stanza.uri or "jabber:client"))
    return "".join(parts)


def _bare(full):
    i = full.find("/")
    return full if i < 0 else full[:i]


class Room:
    """A room. Built by :class:`xmppd.muc.service.MUCService` (``service.get_room``)."""

    _stored = False   # True once RoomStore holds it
    creator = None    # bare JID of the user who created it (live rooms; quota)

    def __init__(self, service, jid, config=None):
        self.service = service
        self.hooks = service.hooks
        self.router = service.router
        self.jid = jid
        # deep copy: defaults hold lists (presence_broadcast) that must not be shared
        self.config = copy.deepcopy(service.default_config)
        if config:
            self.config.update(config)
        self.occupants = {}        # nick -> Occupant
        self.by_jid = {}           # real full JID -> Occupant
        self.affiliations = {}     # bare JID -> affiliation (no 'none' entries)
        self.aff_data = {}         # bare JID -> {"reason":..., "nick":...}
        self._reserved = None      # nick -> bare JID cache
        self.destroying = False
        self.salt = os.urandom(16)
        # the c2s session table, for the cached-bytes fast path (router contract: route_many)
        sessions = getattr(self.router, "sessions", None)
        self._sessions = getattr(sessions, "full", None)
        self.history = []          # the history feature's storage (list of (stamp, element))

    def __repr__(self):
        return f"<Room {self.jid} {len(self.occupants)} occupants>"

    # -- config ----------------------------------------------------------
    def set_config(self, key, value):
        """Set a config key; return True if it changed (then ``save`` it)."""
        if self.config.get(key) == value:
            return False
        self.config[key] = value
        return True

    @property
    def whois_anyone(self):
        return self.config.get("whois") == "anyone"

    def save(self):
        """Queue this room for storage: the commit's Deferred, or None (see MUCService.save_room)."""
        return self.service.save_room(self)

    # -- affiliations ----------------------------------------------------
    def get_affiliation(self, jid):
        """Affiliation of a JID (full or bare str); service admins are owners."""
        bare = _bare(jid)
        if bare in self.service.admins:
            return "owner"
        aff = self.affiliations.get(bare)
        if aff is None:
            host = bare[bare.find("@") + 1:]
            if self.affiliations.get(host) == "outcast":
                return "outcast"
            return "none"
        return aff

    def reserved_nicks(self):
        if self._reserved is None:
            self._reserved = {d["nick"]: j for j, d in self.aff_data.items() if d.get("nick")}
        return self._reserved

    def registered_nick(self, bare):
        d = self.aff_data.get(bare)
        return d.get("nick") if d else None

    def registered_jid(self, nick):
        return self.reserved_nicks().get(nick)

    def get_default_role(self, affiliation):
        role = self.hooks.fire("muc-get-default-role", Event(room=self, affiliation=affiliation))
        return role or "none"

    def owners(self):
        return [j for j, a in self.affiliations.items() if a == "owner"]

    def set_affiliation(self, actor, jid, affiliation, reason=None, data=None):
        """Change an affiliation (``actor`` None = the service itself).

        Raises StanzaError on refusal. ``data``: None keeps the existing
        affiliation data, a dict replaces it, False clears it.
        Broadcasts the change to occupants (§9/§10) or, when the user is not
        in the room, announces it with a message (XEP-0045 example 195).
        """
        if affiliation not in AFFILIATIONS:
            raise stanza_error("bad-request", "modify", "Invalid affiliation")
        j = jidlib.parse_or_none(jid)
        if j is None or j.resource:
            raise stanza_error("jid-malformed", "modify")
        bare = j.userhost()
        host_only = j.user is None
        previous = self.affiliations.get(bare, "none")
        downgrade = AFFILIATIONS[previous] > AFFILIATIONS[affiliation]
        if actor is not None:
            self.check_affiliation_change(actor, bare, affiliation)
        ev = Event(room=self, jid=bare, affiliation=affiliation, previous=previous,
                   actor=actor, reason=reason, data=data)
        self.hooks.fire("muc-pre-set-affiliation", ev)
        data = ev.data
        if affiliation == "none":
            self.affiliations.pop(bare, None)
            self.aff_data.pop(bare, None)
        else:
            self.affiliations[bare] = affiliation
            if data is False:
                self.aff_data.pop(bare, None)
            elif data is not None:
                self.aff_data[bare] = dict(data)
            if reason is not None:
                self.aff_data.setdefault(bare, {})["reason"] = reason
            elif affiliation != previous and bare in self.aff_data:
                self.aff_data[bare].pop("reason", None)   # a ban reason is not a member's
            if affiliation == "outcast" and bare in self.aff_data:
                # §17.3: outcasts SHOULD NOT keep a reserved nickname
                self.aff_data[bare].pop("nick", None)
        self._reserved = None

        role = self.get_default_role(affiliation)
        changed = []
        for occ in list(self.occupants.values()):
            # a host ban removes that host's users, except those with an affiliation
            # of their own (owners, admins and members are named individually)
            if occ.bare == bare or (host_only and affiliation == "outcast"
                                    and occ.bare[occ.bare.find("@") + 1:] == bare
                                    and occ.bare not in self.affiliations
                                    and occ.bare not in self.service.admins):
                old = occ.role
                if occ.role != role and (downgrade or ROLES[occ.role] < ROLES[role]):
                    occ.role = role
                changed.append((occ, old))
        codes = ()
        if role == "none":
            codes = ("301",) if affiliation == "outcast" else ("321",)
        if changed:
            actor_nick, actor_jid = self._actor(actor)
            for occ, old in changed:
                if occ.role == "none":
                    self._remove(occ)
                self.publicise(occ, codes=codes, actor_nick=actor_nick, actor_jid=actor_jid,
                               reason=reason, prev_role=old)
                if occ.role == "none":
                    self._left(occ, codes)
                elif not self.whois_anyone and (old == "moderator") != (occ.role == "moderator"):
                    self._resync_moderator_view(occ)
        else:
            msg = Element((None, "message"))
            msg["from"] = self.jid
            x = msg.addElement((NS_USER, "x"))
            for c in codes:
                x.addElement("status")["code"] = c
            item = x.addElement("item")
            item["affiliation"] = affiliation
            item["jid"] = bare
            if reason:
                item.addElement("reason", content=reason)
            min_role = 0 if self.whois_anyone else ROLES["moderator"]
            self.route_many(msg, [j for o in self.occupants.values()
                                  if ROLES[o.role] >= min_role for j in o.sessions])
        self.save()
        ev.in_room = bool(changed)
        self.hooks.fire("muc-set-affiliation", ev)
        return True

    def check_affiliation_change(self, actor, bare, affiliation):
        """XEP-0045 §9/§10 privilege rules for an affiliation change; raises StanzaError.

        Owners may do anything but leave the room without an owner
        (conflict); admins manage members and outcasts only: granting
        admin/owner is forbidden, touching an admin or owner not-allowed.
        """
        actor_aff = self.get_affiliation(actor)
        previous = self.affiliations.get(bare, "none")
        if affiliation == "outcast" and _bare(actor) == bare and actor_aff in ("owner", "admin"):
            # §9.1 MUST, whatever the other affiliations (Prosody: allowed for one of
            # several owners, not-allowed for an admin)
            raise stanza_error("conflict", "cancel", "You cannot ban yourself")
        if actor_aff == "owner":
            if previous == "owner" and affiliation != "owner":
                if not [o for o in self.owners() if o != bare]:
                    raise stanza_error("conflict", "cancel", "A room needs at least one owner")
        elif actor_aff == "admin":
            if affiliation in ("owner", "admin"):
                raise stanza_error("forbidden", "auth", "Only owners may change the owner and admin lists")
            if previous in ("owner", "admin"):
                raise stanza_error("not-allowed", "cancel")
        else:
            raise stanza_error("forbidden", "auth")
        if bare in self.service.admins and affiliation != "owner":
            raise stanza_error("not-allowed", "cancel", "Service administrators are owners")

    # -- roles -----------------------------------------------------------
    def may_set_role(self, actor, occ, role):
        """XEP-0045 §8/§9 privilege rules for changing ``occ``'s role; raises StanzaError.

        Only moderators in the room may change roles (forbidden); nobody acts
        on a higher affiliation (not-allowed); admins and owners never lose
        voice or moderator status (not-allowed); granting or revoking
        moderator needs an admin or owner (forbidden).
        """
        self.hooks.fire("muc-pre-set-role", Event(room=self, actor=actor, occupant=occ, role=role,
                                                  previous=occ.role))
        actor_occ = self.by_jid.get(actor)
        if actor_occ is None or actor_occ.role != "moderator":
            raise stanza_error("forbidden", "auth", "Only moderators may change roles")
        actor_aff = self.get_affiliation(actor)
        occ_aff = self.get_affiliation(occ.bare)
        if AFFILIATIONS[actor_aff] < AFFILIATIONS[occ_aff]:
            raise stanza_error("not-allowed", "cancel")
        if occ_aff in ("owner", "admin") and role in ("visitor", "participant"):
            raise stanza_error("not-allowed", "cancel",
                               "Admins and owners keep their moderator role")
        if role == "moderator" or (occ.role == "moderator" and role != "none"):
            if actor_aff not in ("owner", "admin"):
                raise stanza_error("forbidden", "auth",
                                   "Only admins and owners may grant or revoke moderator status")

    def set_role(self, actor, occ, role, reason=None):
        """Change an occupant's role (``actor`` None = the service). Raises StanzaError."""
        if role not in ROLES:
            raise stanza_error("bad-request", "modify", "Invalid role")
        if actor is not None:
            self.may_set_role(actor, occ, role)
        prev = occ.role
        occ.role = role
        actor_nick, actor_jid = self._actor(actor)
        codes = ("307",) if role == "none" else ()
        if role == "none":
            self._remove(occ)
        self.publicise(occ, codes=codes, actor_nick=actor_nick, actor_jid=actor_jid,
                       reason=reason, prev_role=prev)
        if role == "none":
            self._left(occ, set(codes))
        elif not self.whois_anyone and (prev == "moderator") != (role == "moderator"):
            self._resync_moderator_view(occ)
        return True

    def _actor(self, actor):
        if actor is None:
            return None, None
        occ = self.by_jid.get(actor)
        return (occ.nick if occ else None), actor

    # -- sending ---------------------------------------------------------
    def route(self, element, early=False):
        box = self.service.outbox
        if box is not None:
            # a muc#admin change being answered: the actor's result goes first (§8.2, §9.1)
            box.append((early, self.router.route, (element,)))
            return
        self.router.route(element)

    def route_many(self, element, recipients):
        if recipients:
            box = self.service.outbox
            if box is not None:
                box.append((False, self.router.route_many, (element, list(recipients))))
                return
            self.router.route_many(element, recipients)

    def send_error(self, stanza, err, by=True, keep=()):
        if stanza.getAttribute("type") == "error":
            return
        self.route(error_reply(stanza, err, by=self.jid if by else None, keep=keep))

    def _build_x(self, occ, codes, with_jid, actor_nick, actor_jid, reason, nick, self_codes=(),
                 trailing=()):
        x = Element((NS_USER, "x"))
        for c in codes:
            x.addElement("status")["code"] = c
        for c in self_codes:
            x.addElement("status")["code"] = c
        affiliation = self.get_affiliation(occ.bare)
        # one item per session when real JIDs are shown (Prosody's multi-session form)
        for jid in (occ.sessions if with_jid else (None,)):
            item = x.addElement("item")
            item["affiliation"] = affiliation
            item["role"] = occ.role
            if jid:
                item["jid"] = jid
            if nick:
                item["nick"] = nick
            if actor_nick or actor_jid:
                a = item.addElement("actor")
                if actor_jid:
                    a["jid"] = actor_jid
                if actor_nick:
                    a["nick"] = actor_nick
            if reason:
                item.addElement("reason", content=reason)
        for c in trailing:
            x.addElement("status")["code"] = c
        return x

    def _presence(self, occ, x, unavailable, payload=None):
        p = Element((None, "presence"))
        p["from"] = occ.room_jid
        if unavailable:
            p["type"] = "unavailable"
        payload = occ.payload if payload is None else payload
        if payload:
            p.addRawXml(payload)
        if occ.stamp:
            p.addRawXml(occ.stamp)
        p.addChild(x)
        return p

    def publicise(self, occ, codes=(), self_codes=(), nick=None, actor_nick=None, actor_jid=None,
                  reason=None, prev_role=None, force_unavailable=False, leaving=None):
        """Broadcast ``occ``'s presence to the room (one build per variant).

        ``codes`` go before the item(s) in every copy (e.g. 201, 303, 307);
        ``self_codes`` (e.g. 100, 210) follow them in the occupant's own copies
        only, which always end with 110 (Prosody's order). An occupant whose
        role is ``none`` is sent as unavailable; ``force_unavailable`` hides
        it from the others only. With real JIDs shown, there is one item per
        session. ``leaving`` names a session of a multi-session occupant that is going:
        its own copy is unavailable, the others stay available.
        """
        occ.cache = None
        unavailable = occ.role == "none" or force_unavailable or not occ.available
        broadcast = self.config.get("presence_broadcast") or ()
        whois_anyone = self.whois_anyone
        full, anon, same = [], [], []
        visible = force_unavailable or occ.role in broadcast
        was_visible = prev_role is not None and prev_role in broadcast
        if visible or was_visible:
            for other in self.occupants.values():
                if other is occ:
                    continue
                if whois_anyone or other.role == "moderator":
                    full.extend(other.sessions)
                elif other.bare == occ.bare:
                    same.extend(other.sessions)
                else:
                    anon.extend(other.sessions)
        unav = unavailable or not visible
        if full:
            x = self._build_x(occ, codes, True, actor_nick, actor_jid, reason, nick)
            self.route_many(self._presence(occ, x, unav), full)
        if anon:
            x = self._build_x(occ, codes, False, actor_nick, None, reason, nick)
            self.route_many(self._presence(occ, x, unav), anon)
        if same:
            x = self._build_x(occ, codes, True, actor_nick, None, reason, nick)
            self.route_many(self._presence(occ, x, unav), same)
        # the occupant itself: every session, each with its own presence payload
        x = self._build_x(occ, codes, True, actor_nick, None, reason, nick, self_codes, ("110",))
        self_unavailable = occ.role == "none" or not occ.available
        for jid, payload in list(occ.sessions.items()):
            p = self._presence(occ, x, self_unavailable or jid == leaving, payload)
            p["to"] = jid
            # a kicked or banned occupant is told before the moderator's result (§8.2)
            self.route(p, early=occ.role == "none")

    def occupant_list_presence(self, occ, with_jid):
        x = self._build_x(occ, (), with_jid, None, None, None, None)
        return self._presence(occ, x, False)

    def _send_list_presence(self, occ, with_jid, to):
        """Send ``occ``'s current presence to one session from a per-occupant byte cache.

        A join sends every occupant's presence to the newcomer; building and
        serialising N presences per join made joins O(N) in XML work. The
        cache is dropped whenever ``publicise`` announces a change.
        """
        sessions = self._sessions
        if sessions is None:
            p = self.occupant_list_presence(occ, with_jid)
            p["to"] = to
            self.route(p)
            return
        cache = occ.cache
        if cache is None:
            cache = occ.cache = {}
        parts = cache.get(with_jid)
        if parts is None:
            p = self.occupant_list_presence(occ, with_jid)
            p["to"] = "\x00"
            parts = cache[with_jid] = tuple(
                p.toXml(defaultUri="jabber:client").encode("utf-8").split(b"\x00", 1))
        s = sessions.get(to)
        if s is not None:
            box = self.service.outbox
            if box is not None:
                box.append((False, s.write_patched, parts))
            else:
                s.write_patched(*parts)

    def is_anonymous_for(self, real_jid):
        if self.whois_anyone:
            return False
        if self.get_affiliation(real_jid) in ("owner", "admin"):
            return False
        occ = self.by_jid.get(real_jid)
        return not (occ and occ.role == "moderator")

    def send_occupant_list(self, to_occ, exclude_bare=None, to=None):
        """Send every other occupant's presence to one session (join, role change).

        ``to`` defaults to the primary session. With ``none`` in
        presence_broadcast, affiliated users who are away are listed too, as
        unavailable presences (named by their reserved nick).
        """
        to = to or to_occ.jid
        to_bare = _bare(to)
        anonymous = self.is_anonymous_for(to)
        broadcast = self.config.get("presence_broadcast") or ()
        seen = set()
        for occ in list(self.occupants.values()):
            seen.add(occ.bare)
            if occ is to_occ or (exclude_bare and occ.bare == exclude_bare):
                continue
            if occ.role in broadcast or occ.bare == to_bare:
                self._send_list_presence(occ, not anonymous or occ.bare == to_bare, to)
        if "none" in broadcast:
            for bare, aff in list(self.affiliations.items()):
                if bare in seen:
                    continue
                nick = self.registered_nick(bare)
                if not nick and anonymous:
                    continue
                p = Element((None, "presence"))
                p["to"] = to
                p["from"] = self.jid + "/" + nick if nick else self.jid
                p["type"] = "unavailable"
                item = p.addElement((NS_USER, "x")).addElement("item")
                item["affiliation"] = aff
                item["role"] = "none"
                if nick:
                    item["nick"] = nick
                if not anonymous:
                    item["jid"] = bare
                self.route(p)

    # -- occupants ---------------------------------------------------------
    def _add(self, occ):
        self.occupants[occ.nick] = occ
        for jid in occ.sessions:
            self.by_jid[jid] = occ

    def _remove(self, occ):
        # removed without a leave presence of its own: a bare unavailable
        occ.payload = ""
        for jid in occ.sessions:
            occ.sessions[jid] = ""
            if self.by_jid.get(jid) is occ:
                del self.by_jid[jid]
        if self.occupants.get(occ.nick) is occ:
            del self.occupants[occ.nick]

    def _resync_moderator_view(self, occ):
        """Real JIDs became visible or hidden for ``occ``: resend the others' presence."""
        for jid in list(occ.sessions):
            self.send_occupant_list(occ, exclude_bare=occ.bare, to=jid)

    def _left(self, occ, codes=()):
        self.hooks.fire("muc-occupant-left", Event(room=self, occupant=occ, nick=occ.nick,
                                                   codes=set(codes)))
        self.service.room_maybe_empty(self)

    # -- presence ----------------------------------------------------------
    def handle_presence(self, stanza, frm, nick):
        """Presence from real JID ``frm`` to ``room/nick`` (nick None: bare room)."""
        ptype = stanza.getAttribute("type")
        occ = self.by_jid.get(frm)
        if nick is None:
            if occ is None:
                if ptype is None:
                    self.send_error(stanza, stanza_error(
                        "jid-malformed", "modify", "A nickname is required to join"))
                elif ptype == "probe":
                    self.send_error(stanza, stanza_error(
                        "not-acceptable", "cancel", "You are not currently connected to this chat"))
                return
            nick = occ.nick     # buggy clients address the room instead of their nick
        if ptype is None:
            if occ is None:
                self.join(stanza, frm, nick)
            elif occ.nick == nick:
                self.presence_update(occ, stanza)
            else:
                self.change_nick(occ, stanza, nick)
        elif ptype == "unavailable":
            if occ is not None:
                self.leave(occ, stanza)
        elif ptype == "error":
            if occ is not None:
                self.kick_for_error(occ, stanza)
        elif ptype == "probe":
            self.respond_to_probe(stanza, frm, nick, occ)
        elif ptype in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            self.send_error(stanza, stanza_error("service-unavailable", "cancel"), by=False)
        else:
            self.send_error(stanza, stanza_error("bad-request", "modify"))

    def join(self, stanza, frm, nick, is_new_room=False):
        bare = _bare(frm)
        muc_x = None
        for c in stanza.elements():
            if c.name == "x" and c.uri == NS_MUC:
                muc_x = c
                break
        if muc_x is None and not is_new_room:
            # §7.2.1 (v1.32+): presence without <x/> from a non-occupant is a
            # desynchronised client (or groupchat 1.0): answer with an explicit
            # kick (110, 307, 333) rather than a silent join.
            p = Element((None, "presence"))
            p["from"] = self.jid + "/" + nick
            p["to"] = frm
            p["type"] = "unavailable"
            x = p.addElement((NS_USER, "x"))
            item = x.addElement("item")
            item["affiliation"] = "none"
            item["role"] = "none"
            item.addElement("reason", content="You are not in the room.")
            for code in ("110", "307", "333"):
                x.addElement("status")["code"] = code
            self.route(p)
            return False
        aff = self.get_affiliation(bare)
        role = self.get_default_role(aff)
        occ = Occupant(self.jid, nick, frm, bare, role)
        ev = Event(room=self, stanza=stanza, occupant=occ, is_new_room=is_new_room,
                   muc_x=muc_x, affiliation=aff, jid=frm)
        try:
            if self.hooks.fire("muc-occupant-pre-join", ev):
                return False
            existing = self.occupants.get(occ.nick)
            if existing is not None and existing.bare != bare:
                raise stanza_error("conflict", "cancel", "That nickname is already in use")
            if occ.role == "none":
                raise stanza_error("forbidden", "auth")
        except StanzaError as e:
            self.send_error(stanza, e, keep=_MUC_X)
            return False
        if existing is not None:
            return self.add_session(existing, stanza, frm)
        # 210: the room nick differs from the one asked for (stringprep, or a
        # feature enforcing a reserved nick)
        nick_changed = occ.nick != stanza.getAttribute("to", "").partition("/")[2]
        occ.room_jid = self.jid + "/" + occ.nick
        occ.set_payload(frm, presence_payload(stanza))
        self._add(occ)
        # existing occupants to the newcomer, then the newcomer to everyone
        self.send_occupant_list(occ)
        codes = ["201"] if is_new_room else []
        self_codes = []
        if self.whois_anyone:
            (codes if is_new_room else self_codes).append("100")
        if nick_changed:
            (codes if is_new_room else self_codes).append("210")
        extra = self.hooks.fire("muc-occupant-join-codes", Event(room=self, occupant=occ))
        if extra:
            # the creator is alone in a new room: its codes are all self-presence codes
            (codes if is_new_room else self_codes).extend(extra)
        if is_new_room:
            self.publicise(occ, codes=codes)
        else:
            self.publicise(occ, self_codes=self_codes)
        self.hooks.fire("muc-occupant-joined", Event(room=self, occupant=occ, stanza=stanza))
        self.hooks.fire("muc-occupant-session-new", Event(room=self, occupant=occ, stanza=stanza,
                                                          jid=frm))
        return True

    def add_session(self, occ, stanza, frm):
        """Another resource of the same user joins with the same nick (multi-session)."""
        occ.sessions[frm] = presence_payload(stanza)
        self.by_jid[frm] = occ
        self.send_occupant_list(occ, to=frm)
        self.publicise(occ)
        self.hooks.fire("muc-occupant-session-new", Event(room=self, occupant=occ, stanza=stanza,
                                                          jid=frm))
        return True

    def presence_update(self, occ, stanza):
        ev = Event(room=self, occupant=occ, stanza=stanza, new_nick=None)
        try:
            if self.hooks.fire("muc-occupant-pre-change", ev):
                return
        except StanzaError as e:
            self.send_error(stanza, e)
            return
        frm = stanza.getAttribute("from")
        occ.set_payload(frm if frm in occ.sessions else occ.jid, presence_payload(stanza))
        rejoin = any(c.name == "x" and c.uri == NS_MUC for c in stanza.elements())
        if rejoin:
            # §17.1: a join from a joined client is a full synchronisation request
            self.send_occupant_list(occ, to=frm)
        self.publicise(occ)
        if rejoin:
            self.hooks.fire("muc-occupant-session-new", Event(room=self, occupant=occ,
                                                              stanza=stanza, jid=frm))

    def change_nick(self, occ, stanza, new_nick):
        ev = Event(room=self, occupant=occ, stanza=stanza, new_nick=new_nick)
        try:
            if self.hooks.fire("muc-occupant-pre-change", ev):
                return
            if new_nick in self.occupants:
                raise stanza_error("conflict", "cancel", "That nickname is already in use")
        except StanzaError as e:
            self.send_error(stanza, e)
            return
        new_nick = ev.new_nick
        # unavailable with 303 from the old nick (all sessions move together)
        occ.available = False
        self.publicise(occ, codes=("303",), nick=new_nick)
        occ.available = True
        payloads = dict(occ.sessions)
        self._remove(occ)
        occ.sessions.update(payloads)
        occ.payload = payloads[occ.jid]
        occ.nick = new_nick
        occ.room_jid = self.jid + "/" + new_nick
        frm = stanza.getAttribute("from")
        occ.set_payload(frm if frm in occ.sessions else occ.jid, presence_payload(stanza))
        self._add(occ)
        self.publicise(occ)

    def _drop_one_session(self, occ, jid, payload):
        """One of several sessions goes; the occupant stays.

        As Prosody: the room re-announces the occupant with the leaving
        session still listed, that session's own copy being unavailable;
        then the session is forgotten.
        """
        occ.sessions[jid] = payload
        self.publicise(occ, leaving=jid)
        occ.drop_session(jid)
        del self.by_jid[jid]

    def _drop_failed_session(self, occ, jid, status):
        """One of several sessions bounced an error: only that session is removed.

        It gets its own unavailable self-presence (333); the others are told
        about the occupant with items for the remaining sessions only (an
        erroring session is gone, not leaving politely, so unlike
        ``_drop_one_session`` it is not listed).
        """
        occ.drop_session(jid)
        del self.by_jid[jid]
        p = Element((None, "presence"))
        p["from"] = occ.room_jid
        p["to"] = jid
        p["type"] = "unavailable"
        p.addChild(status)
        x = p.addElement((NS_USER, "x"))
        item = x.addElement("item")
        item["affiliation"] = self.get_affiliation(occ.bare)
        item["role"] = "none"
        item["jid"] = jid
        for code in ("333", "110"):
            x.addElement("status")["code"] = code
        self.route(p)
        self.publicise(occ)

    def leave(self, occ, stanza=None, codes=()):
        payload = presence_payload(stanza) if stanza is not None else ""
        frm = stanza.getAttribute("from") if stanza is not None else occ.jid
        if len(occ.sessions) > 1 and frm in occ.sessions:
            self._drop_one_session(occ, frm, payload)
            return
        if self.config.get("locked") and len(self.occupants) == 1 and not self.destroying:
            # §10.1.3: the owner left before submitting the initial configuration (or
            # lost the connection): the room is destroyed and the exit says so
            self.destroy(reason="The room was not configured before its owner left")
            return
        prev = occ.role
        occ.role = "none"
        self._remove(occ)
        occ.set_payload(occ.jid, payload)
        self.publicise(occ, codes=codes, prev_role=prev)
        self._left(occ, codes)

    def kick_for_error(self, occ, stanza):
        """A bounced stanza from an occupant's client: remove it (status 333).

        As Prosody, the unavailable presence carries ``Kicked: <condition>``
        (plus the error text in non-anonymous rooms).
        """
        cond, text = _error_condition(stanza)
        message = "Kicked: " + (cond.replace("-", " ") if cond else "presence error")
        if text and self.whois_anyone:
            message += ": " + text
        st = Element((None, "status"))
        st.addContent(message)
        frm = stanza.getAttribute("from")
        if len(occ.sessions) > 1 and frm in occ.sessions:
            self._drop_failed_session(occ, frm, st)
            return
        prev = occ.role
        occ.role = "none"
        self._remove(occ)
        occ.set_payload(occ.jid, st.toXml())
        self.publicise(occ, codes=("333",), prev_role=prev)
        self._left(occ, ("333",))

    def respond_to_probe(self, stanza, frm, nick, prober):
        if prober is None:
            self.send_error(stanza, stanza_error("not-acceptable", "cancel",
                                                 "You are not currently connected to this chat"))
            return
        occ = self.occupants.get(nick)
        if occ is None:
            bare = self.registered_jid(nick)
            if bare is None:
                return
            p = Element((None, "presence"))
            p["to"] = frm
            p["from"] = self.jid + "/" + nick
            p["type"] = "unavailable"
            item = p.addElement((NS_USER, "x")).addElement("item")
            item["affiliation"] = self.get_affiliation(bare)
            item["role"] = "none"
            item["nick"] = nick
            if not self.is_anonymous_for(frm):
                item["jid"] = bare
            self.route(p)
            return
        with_jid = not self.is_anonymous_for(frm) or occ.bare == prober.bare
        p = self.occupant_list_presence(occ, with_jid)
        p["to"] = frm
        self.route(p)

    # -- messages ----------------------------------------------------------
    def handle_message(self, stanza, frm, nick):
        mtype = stanza.getAttribute("type")
        if nick is None:
            if mtype == "groupchat":
                self.groupchat(stanza, frm)
            elif mtype == "error":
                occ = self.by_jid.get(frm)
                if occ is not None and _kickable(stanza):
                    self.kick_for_error(occ, stanza)
            else:
                occ = self.by_jid.get(frm)
                try:
                    handled = self.hooks.fire("muc-message-to-room", Event(
                        room=self, occupant=occ, stanza=stanza, jid=frm))
                except StanzaError as e:
                    self.send_error(stanza, e)
                    return
                if not handled:
                    self.send_error(stanza, stanza_error(
                        "bad-request" if _has(stanza, NS_USER, "x") else "service-unavailable"), by=False)
            return
        self.private_message(stanza, frm, nick)

    def groupchat(self, stanza, frm):
        occ = self.by_jid.get(frm)
        if occ is None:
            self.send_error(stanza, stanza_error("not-acceptable", "cancel",
                                                 "You are not currently connected to this chat"))
            return
        if occ.role == "visitor":
            self.send_error(stanza, stanza_error(
                "forbidden", "auth", "You do not currently have permission to speak in this chat"))
            return
        try:
            if self.hooks.fire("muc-occupant-groupchat", Event(room=self, occupant=occ,
                                                                stanza=stanza)):
                return
        except StanzaError as e:
            self.send_error(stanza, e)
            return
        if not stanza.getAttribute("id"):
            stanza["id"] = uuid.uuid4().hex
        # drop delay elements that claim to come from us, and any occupant-id (XEP-0421 §4)
        for c in list(stanza.elements()):
            if (c.name == "delay" and c.uri == NS_DELAY and c.getAttribute("from") == self.jid) \
                    or (c.name == "occupant-id" and c.uri == NS_OCCUPANT_ID):
                stanza.children.remove(c)
        if occ.stamp:
            stanza.addRawXml(occ.stamp)    # pre-serialised: ~3 us a message (an Element: ~18 us)
        stanza["from"] = occ.room_jid
        STATS.muc_messages += 1
        self.broadcast_message(stanza)

    def broadcast_message(self, stanza):
        """Send a room message (groupchat, subject, status) to every occupant."""
        self.route_many(stanza, list(self.by_jid))
        self.hooks.fire("muc-broadcast-message", Event(room=self, stanza=stanza))

    def private_message(self, stanza, frm, nick):
        mtype = stanza.getAttribute("type")
        occ = self.by_jid.get(frm)
        if occ is None:
            if mtype != "error":
                self.send_error(stanza, stanza_error("not-acceptable", "cancel",
                                                     "You are not currently connected to this chat"))
            return
        if mtype == "groupchat":
            self.send_error(stanza, stanza_error("bad-request", "modify"))
            return
        if mtype == "error" and _kickable(stanza):
            self.kick_for_error(occ, stanza)
            return
        target = self.occupants.get(nick)
        if target is None:
            self.send_error(stanza, stanza_error("item-not-found", "cancel", "Recipient not in room"))
            return
        try:
            if self.hooks.fire("muc-private-message", Event(room=self, occupant=occ, target=target,
                                                             stanza=stanza)):
                return
        except StanzaError as e:
            self.send_error(stanza, e)
            return
        for c in list(stanza.elements()):
            if c.uri == NS_USER or c.uri == NS_MUC or c.uri == NS_OCCUPANT_ID:
                stanza.children.remove(c)
        stanza.addElement((NS_USER, "x"))
        if occ.stamp:
            stanza.addRawXml(occ.stamp)    # pre-serialised: ~3 us a message (an Element: ~18 us)
        stanza["from"] = occ.room_jid
        if len(target.sessions) == 1:
            stanza["to"] = target.jid
            self.route(stanza)
        else:
            self.route_many(stanza, list(target.sessions))

    # -- IQs to occupants ----------------------------------------------------
    def _mac(self, text):
        return hmac.new(self.salt, text.encode(), hashlib.sha256).hexdigest()[:8]

    def handle_iq_to_occupant(self, stanza, frm, nick):
        itype = stanza.getAttribute("type")
        target = self.occupants.get(nick)
        if itype in ("result", "error"):
            if target is None:
                return
            try:
                sender_jid, orig_id, h = base64.b64decode(
                    stanza.getAttribute("id", "")).decode().split("\0")
            except Exception:
                return
            if frm != sender_jid and _bare(sender_jid) != frm:
                return
            session = next((j for j in target.sessions if self._mac(j) == h), None)
            if session is None:
                return
            sender_occ = self.by_jid.get(sender_jid)
            if sender_occ is None:
                return
            stanza["from"] = sender_occ.room_jid
            stanza["to"] = session
            stanza["id"] = orig_id
            self.route(stanza)
            return
        occ = self.by_jid.get(frm)
        if occ is None:
            self.send_error(stanza, stanza_error("not-acceptable", "cancel",
                                                 "You are not currently connected to this chat"))
            return
        if target is None:
            self.send_error(stanza, stanza_error("item-not-found", "cancel", "Recipient not in room"))
            return
        child = stanza.firstChildElement()
        try:
            if self.hooks.fire("muc-occupant-iq", Event(room=self, occupant=occ, target=target,
                                                        stanza=stanza, query=child, jid=frm)):
                return
        except StanzaError as e:
            self.send_error(stanza, e)
            return
        new_id = target.jid + "\0" + stanza.getAttribute("id", "") + "\0" + self._mac(frm)
        stanza["id"] = base64.b64encode(new_id.encode()).decode()
        stanza["from"] = occ.room_jid
        to = target.jid
        if child is not None and child.uri in ("vcard-temp", "urn:ietf:params:xml:ns:vcard-4.0",
                                               "http://jabber.org/protocol/pubsub"):
            to = target.bare
        stanza["to"] = to
        self.route(stanza)

    # -- destroy -------------------------------------------------------------
    def destroy(self, reason=None, alternate=None, password=None, actor=None, tombstone=True):
        """§10.9. ``tombstone=False``: leave no tombstone (features/tombstones.py) behind."""
        self.hooks.fire("muc-pre-room-destroy", Event(room=self, reason=reason,
                                                      alternate=alternate, actor=actor))
        self.destroying = True
        for occ in list(self.occupants.values()):
            self._remove(occ)
            x = Element((NS_USER, "x"))
            d = x.addElement("destroy")
            if alternate:
                d["jid"] = alternate
            if reason:
                d.addElement("reason", content=reason)
            if password:
                d.addElement("password", content=password)
            affiliation = self.get_affiliation(occ.bare)
            for jid in occ.sessions:
                item = x.addElement("item")
                item["affiliation"] = affiliation
                item["role"] = "none"
                item["jid"] = jid
            x.addElement("status")["code"] = "110"
            for jid in list(occ.sessions):
                p = Element((None, "presence"))
                p["from"] = occ.room_jid
                p["to"] = jid
                p["type"] = "unavailable"
                p.addChild(x)
                self.route(p)
            occ.role = "none"
            self.hooks.fire("muc-occupant-left", Event(room=self, occupant=occ, nick=occ.nick,
                                                       codes=set()))
        # forgotten first, so that a handler may put something in its place (tombstones)
        self.service.forget_room(self, delete=True)
        self.hooks.fire("muc-room-destroyed", Event(room=self, reason=reason, alternate=alternate,
                                                    tombstone=tombstone))


def _has(stanza, uri, name):
    for c in stanza.elements():
        if c.name == name and c.uri == uri:
            return True
    return False


_KICKABLE = {"gone", "internal-server-error", "item-not-found", "jid-malformed",
             "recipient-unavailable", "redirect", "remote-server-not-found",
             "remote-server-timeout", "service-unavailable", "malformed error"}


def _error_condition(stanza):
    """(condition, text) of an error stanza; (None, None) when malformed."""
    for c in stanza.elements():
        if c.name == "error":
            cond = text = None
            for e in c.elements():
                if e.uri == "urn:ietf:params:xml:ns:xmpp-stanzas":
                    if e.name == "text":
                        text = str(e)
                    elif cond is None:
                        cond = e.name
            return cond, text
    return None, None


def _kickable(stanza):
    """Prosody's rule: errors that mean the client is gone, not a one-off refusal."""
    cond, _ = _error_condition(stanza)
    return cond is None or cond in _KICKABLE


# -- core hooks (registered before every feature) ---------------------------
core = Feature("core", defaults=CORE_DEFAULTS)


@core.hook("muc-get-default-role", priority=-1)
def _default_role(event):
    aff = event.affiliation
    if aff in ("owner", "admin"):
        return "moderator"
    if aff == "outcast":
        return "none"
    return "participant"


def _strict_nick(event, nick):
    """The router accepts occupant JIDs by the query profile (xmppd.jid); a nick is a stored
    string and must pass strict resourceprep. Refused from the occupant JID as prepared,
    with by=room (as Prosody)."""
    if not jidlib.strict_resource(nick):
        event.stanza["to"] = event.room.jid + "/" + nick
        raise stanza_error("jid-malformed", "modify", "Nickname must pass strict validation")


@core.hook("muc-occupant-pre-join", priority=2)
def _nick_valid(event):
    nick = event.occupant.nick
    if not nick or not nick.strip():
        raise stanza_error("not-allowed", "modify", "Invisible nicknames are forbidden")
    _strict_nick(event, nick)


@core.hook("muc-occupant-pre-change", priority=2)
def _nick_valid_change(event):
    nick = event.new_nick
    if nick is not None and not nick.strip():
        raise stanza_error("not-allowed", "modify", "Invisible nicknames are forbidden")
    if nick is not None:
        _strict_nick(event, nick)


@core.hook("muc-occupant-pre-join", priority=-10)
def _banned(event):
    if event.affiliation == "outcast":
        raise stanza_error("forbidden", "auth", "You have been banned from this room")


@core.hook("muc-occupant-session-new", priority=20)
def _send_subject(event):
    """Always send the subject (empty when unset): clients wait for it (GUIDE §7.12)."""
    room = event.room
    msg = Element((None, "message"))
    msg["type"] = "groupchat"
    msg["from"] = room.config.get("subject_from") or room.jid
    msg["to"] = getattr(event, "jid", None) or event.occupant.jid
    subj = msg.addElement("subject")
    if room.config.get("subject"):
        subj.addContent(room.config["subject"])
    stamp = room.config.get("subject_time")
    if stamp:
        # §7.2.15 SHOULD: when the subject was set (as Prosody; none when never set)
        delay = msg.addElement((NS_DELAY, "delay"))
        delay["from"] = room.jid
        delay["stamp"] = stamp
    room.route(msg)


@core.hook("muc-disco#info", priority=100)
def _core_disco(event):
    from wokkel.data_form import Field
    event.features.add("http://jabber.org/protocol/muc#stable_id")
    event.form.append(Field("text-single", var="muc#roominfo_occupants",
                            label="Number of occupants", value=str(len(event.room.occupants))))
