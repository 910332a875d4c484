"""Mediated invitations and declines (XEP-0045 §7.8.2; muc#roomconfig_allowinvites).

An ``<invite to=…/>`` in a muc#user ``<x/>`` sent to the bare room JID is
forwarded from the room to the invitee, with ``from`` set to the inviter
(its occupant JID when the room is semi-anonymous and the invitee would not
be a moderator, as Prosody does), the reason, the room password when there
is one, and Prosody's compatibility extras (``jabber:x:conference`` and a
plain-text body for clients that do not know invites).

Who may invite: anyone with voice (or who would get voice on entering) in
an open room; in a members-only room admins and owners, and members too
when ``allow_invites`` is on (XEP-0045 1.35.3: the option gives members
extra rights, it never restricts owners). Inviting an unaffiliated user
into a members-only room makes them a member. Inviting a local address
that has no account gets item-not-found. ``<decline to=…/>`` is
forwarded to the inviter with ``from`` = the decliner's bare JID.
"""
from twisted.words.xish.domish import Element
from wokkel.data_form import Field

from xmppd import jid as jidlib
from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import AFFILIATIONS, NS_USER, ROLES

NS_CONFERENCE = "jabber:x:conference"
F_ALLOW = "muc#roomconfig_allowinvites"

feature = Feature("invites", defaults={"allow_invites": False})


def _user_x(stanza):
    for c in stanza.elements():
        if c.name == "x" and c.uri == NS_USER:
            return c
    return None


def _reason(el):
    for c in el.elements():
        if c.name == "reason":
            return str(c)
    return None


def _target(value):
    j = jidlib.parse_or_none(value) if value else None
    if j is None:
        raise stanza_error("jid-malformed", "cancel", "Invalid address")   # Prosody's type
    return j


def may_invite(room, inviter):
    """Raise forbidden unless real JID ``inviter`` may invite to ``room``."""
    occ = room.by_jid.get(inviter)
    aff = room.get_affiliation(inviter)
    role = occ.role if occ is not None else room.get_default_role(aff)
    if ROLES.get(role or "none", 0) <= ROLES["visitor"]:
        raise stanza_error("forbidden", "auth", "You may not invite people to this room")
    if room.config.get("members_only"):
        needed = "member" if room.config.get("allow_invites") else "admin"
        if AFFILIATIONS[aff] < AFFILIATIONS[needed]:
            raise stanza_error("forbidden", "auth",
                               "Only admins may invite people to this members-only room")


def _forward_children(stanza, msg):
    """Keep the request's other payloads (body, thread...) but no muc#user data."""
    for c in list(stanza.elements()):
        if c.uri == NS_USER and c.name == "x":
            continue
        msg.addChild(c)


def _check_exists(room, invitee):
    """§7.8.2: an invitee who does not exist on this server gets item-not-found (SHOULD)."""
    router = room.router
    if invitee.host != getattr(router, "domain", None) or invitee.user is None:
        return
    if invitee.userhost() in router.sessions.bare or router.user_exists(invitee.user):
        return
    raise stanza_error("item-not-found", "cancel", "No such user")


def invite(room, stanza, inviter, invite_el):
    invitee = _target(invite_el.getAttribute("to"))
    may_invite(room, inviter)
    _check_exists(room, invitee)
    invitee_jid = invitee.full()
    reason = _reason(invite_el)
    shown_from = inviter
    occ = room.by_jid.get(inviter)
    if occ is not None and not room.whois_anyone and \
            room.get_default_role(room.get_affiliation(invitee.userhost())) != "moderator":
        shown_from = occ.room_jid
    msg = Element((None, "message"))
    msg["from"] = room.jid
    msg["to"] = invitee_jid
    if stanza.getAttribute("id"):
        msg["id"] = stanza["id"]
    has_body = any(c.name == "body" for c in stanza.elements())
    _forward_children(stanza, msg)
    x = msg.addElement((NS_USER, "x"))
    inv = x.addElement("invite")
    inv["from"] = shown_from
    # always a <reason/>, empty when the inviter gave none (as Prosody; some clients expect it)
    inv.addElement("reason", content=reason or "")
    if room.config.get("password"):
        x.addElement("password", content=room.config["password"])
    conf = msg.addElement((NS_CONFERENCE, "x"))
    conf["jid"] = room.jid
    if reason:
        conf.addContent(reason)
    if not has_body:
        text = f"{shown_from} invited you to the room {room.jid}"
        if reason:
            text += f" ({reason})"
        msg.addElement("body", content=text)
    if room.config.get("members_only") and invitee.user is not None and \
            AFFILIATIONS[room.get_affiliation(invitee.userhost())] <= AFFILIATIONS["none"]:
        room.set_affiliation(None, invitee.userhost(), "member",
                             reason=f"Invited by {shown_from}")
    room.route(msg)


def decline(room, stanza, decliner, decline_el):
    target = _target(decline_el.getAttribute("to"))
    reason = _reason(decline_el)
    to = target.full()
    if target.userhost() == room.jid and target.resource:
        occ = room.occupants.get(target.resource)
        if occ is None:
            raise stanza_error("item-not-found", "cancel", "Recipient not in room")
        to = occ.jid
    msg = Element((None, "message"))
    msg["from"] = room.jid
    msg["to"] = to
    if stanza.getAttribute("id"):
        msg["id"] = stanza["id"]
    has_body = any(c.name == "body" for c in stanza.elements())
    _forward_children(stanza, msg)
    bare = jidlib.parse(decliner).userhost()
    d = msg.addElement((NS_USER, "x")).addElement("decline")
    d["from"] = bare
    if reason is not None:
        d.addElement("reason", content=reason)
    if not has_body:
        text = f"{bare} declined your invite to the room {room.jid}"
        if reason:
            text += f" ({reason})"
        msg.addElement("body", content=text)
    room.route(msg)


@feature.hook("muc-message-to-room")
def _message(event):
    stanza = event.stanza
    if stanza.getAttribute("type") not in (None, "normal"):
        return None
    x = _user_x(stanza)
    if x is None:
        return None
    payload = x.firstChildElement()
    if payload is None or payload.name not in ("invite", "decline"):
        return None          # the core answers bad-request
    frm = event.jid
    if payload.name == "invite":
        invite(event.room, stanza, frm, payload)
    else:
        decline(event.room, stanza, frm, payload)
    return True


@feature.hook("muc-config-form", priority=75)
def _form(event):
    event.form.append(Field("boolean", var=F_ALLOW, label="Allow members to invite new members",
                            desc="In members-only rooms, let members (not only admins) invite "
                                 "others; invitees become members",
                            value=bool(event.room.config.get("allow_invites"))))


@feature.hook(f"muc-config-submitted/{F_ALLOW}")
def _submitted(event):
    if event.room.set_config("allow_invites", bool(event.value)):
        event.status_codes.add("104")


@feature.hook("muc-disco#info")
def _disco(event):
    config = event.room.config
    event.form.append(Field("boolean", var=F_ALLOW, label="Allow users to invite other users",
                            value=not config.get("members_only") or bool(config.get("allow_invites"))))
