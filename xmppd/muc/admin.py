"""muc#admin (XEP-0045 §8 moderator and §9 admin use cases, §10 owner lists).

``handle(room, iq, query, frm, type)`` returns the result payload (or
None for an empty result) and raises StanzaError on refusal; every item of
a set is checked before any is applied, so a request is all-or-nothing as
far as privileges go.
"""
from twisted.words.xish.domish import Element

from xmppd import jid as jidlib
from xmppd.muc.errors import stanza_error
from xmppd.muc.room import AFFILIATIONS, NS_ADMIN, ROLES

RESERVED_REASON = "This nickname is reserved"


def _items(query):
    return [c for c in query.elements() if c.name == "item" and c.uri == NS_ADMIN]


def _reason(item):
    for c in item.elements():
        if c.name == "reason":
            return str(c) or None     # clients send an empty <reason/> for "no reason"
    return None


def handle(room, iq, query, frm, itype):
    if itype == "get":
        return get_list(room, query, frm)
    return set_items(room, query, frm)


def get_list(room, query, frm):
    items = _items(query)
    if not items:
        raise stanza_error("bad-request", "cancel")
    item = items[0]
    aff = item.getAttribute("affiliation")
    role = item.getAttribute("role")
    result = Element((NS_ADMIN, "query"))
    if aff is not None and role is None:
        if aff not in AFFILIATIONS:
            raise stanza_error("bad-request", "cancel")
        mine = AFFILIATIONS[room.get_affiliation(frm)]
        if not ((mine >= AFFILIATIONS["admin"] and mine >= AFFILIATIONS[aff])
                or (room.config.get("members_only") and room.whois_anyone
                    and mine >= AFFILIATIONS["member"])):
            raise stanza_error("forbidden", "auth")
        for bare, a in list(room.affiliations.items()):
            if a != aff:
                continue
            it = result.addElement("item")
            it["affiliation"] = aff
            it["jid"] = bare
            data = room.aff_data.get(bare) or {}
            if data.get("nick"):
                it["nick"] = data["nick"]
            if data.get("reason"):
                it.addElement("reason", content=data["reason"])
        return result
    if role is not None and aff is None:
        if role not in ROLES:
            raise stanza_error("bad-request", "cancel")
        occ = room.by_jid.get(frm)
        my_role = occ.role if occ else room.get_default_role(room.get_affiliation(frm))
        if my_role != "moderator":
            raise stanza_error("forbidden", "auth")
        for o in sorted(room.occupants.values(), key=lambda o: o.nick):
            if o.role != role:
                continue
            it = result.addElement("item")
            it["affiliation"] = room.get_affiliation(o.bare)
            it["role"] = o.role
            it["jid"] = o.jid
            it["nick"] = o.nick
        return result
    raise stanza_error("bad-request", "cancel")


def _parse_item(room, item):
    """Normalise one item: returns (kind, target, value, nick, reason)."""
    jid_s = item.getAttribute("jid")
    nick = item.getAttribute("nick")
    aff = item.getAttribute("affiliation")
    role = item.getAttribute("role")
    bare = None
    if jid_s is not None:
        j = jidlib.parse_or_none(jid_s)
        if j is None:
            raise stanza_error("jid-malformed", "modify")
        if j.resource is not None:
            raise stanza_error("jid-malformed", "modify", "Bare JID expected, got full JID")
        bare = j.userhost()
    if nick is not None:
        n = jidlib.parse_or_none(room.jid + "/" + nick)
        if n is None:
            raise stanza_error("jid-malformed", "modify", "Invalid nickname")
        nick = n.resource
    if bare is None and nick is not None:
        # a buggy client that names the occupant by nick only (Prosody issue 1224)
        occ = room.occupants.get(nick)
        if occ is not None:
            bare = occ.bare
    elif role is not None and nick is None and bare is not None:
        for o in room.occupants.values():
            if o.bare == bare:
                nick = o.nick
                break
    reason = _reason(item)
    if aff is not None and role is None:
        if bare is None:
            raise stanza_error("bad-request", "cancel")
        if aff not in AFFILIATIONS:
            raise stanza_error("not-acceptable", "modify", "Invalid affiliation")
        return ("affiliation", bare, aff, nick, reason)
    if role is not None and aff is None:
        if nick is None:
            raise stanza_error("bad-request", "cancel")
        if role not in ROLES:
            raise stanza_error("not-acceptable", "modify", "Invalid role")
        occ = room.occupants.get(nick)
        if occ is None:
            raise stanza_error("item-not-found", "modify")   # Prosody's type
        return ("role", occ, role, nick, reason)
    raise stanza_error("bad-request", "cancel")


def set_items(room, query, frm):
    items = _items(query)
    if not items:
        raise stanza_error("bad-request", "cancel")
    parsed = [_parse_item(room, it) for it in items]
    owners = set(room.owners())
    for kind, target, value, nick, reason in parsed:
        if kind == "affiliation":
            room.check_affiliation_change(frm, target, value)
            if value == "owner":
                owners.add(target)
            else:
                owners.discard(target)
        else:
            room.may_set_role(frm, target, value)
    if not owners:
        raise stanza_error("conflict", "cancel", "A room needs at least one owner")
    if any(kind == "role" or value == "outcast" for kind, _, value, _, _ in parsed):
        # §8.2-8.4, §9.1, §9.6-9.7: the actor's result, then the broadcast. Other
        # affiliation changes keep Prosody's order (broadcast first), which
        # Prosody's own scripts (the shared seeds) pin down.
        room.service.hold_broadcasts()
    for kind, target, value, nick, reason in parsed:
        if kind == "affiliation":
            data = None
            if nick is not None and value not in ("none", "outcast"):
                existing = room.occupants.get(nick)
                if existing is not None and existing.bare != target:
                    room.set_role(None, existing, "none", RESERVED_REASON)
                data = dict(room.aff_data.get(target) or {})
                holder = room.registered_jid(nick)
                if holder is not None and holder != target:
                    room.aff_data.get(holder, {}).pop("nick", None)
                    room._reserved = None
                data["nick"] = nick
            room.set_affiliation(frm, target, value, reason, data)
        else:
            if target.nick in room.occupants:
                room.set_role(frm, target, value, reason)
    return None
