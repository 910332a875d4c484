"""jabber:iq:register on a room (XEP-0045 §7.10): reserve a nickname, become a member.

Members and above may register (others get registration-required, as
Prosody does by default); registering grants membership and stores the
reserved nick in the affiliation data; ``<remove/>`` drops membership
(owners/admins keep their affiliation) and the reservation.
"""
from twisted.words.xish.domish import Element

from xmppd import jid as jidlib
from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Event
from xmppd.muc.room import NS_DATA

NS_REGISTER = "jabber:iq:register"
NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"


def registration_form():
    x = Element((NS_DATA, "x"))
    x["type"] = "form"
    f = x.addElement("field")
    f["type"] = "hidden"
    f["var"] = "FORM_TYPE"
    f.addElement("value", content=NS_MUC_REGISTER)
    f = x.addElement("field")
    f["type"] = "text-single"
    f["label"] = "Nickname"
    f["var"] = "muc#register_roomnick"
    f.addElement("required")
    return x


def _form_values(x):
    values = {}
    for f in x.elements():
        if f.name == "field" and f.getAttribute("var"):
            values[f["var"]] = [str(v) for v in f.elements() if v.name == "value"]
    return values


def handle(room, iq, query, frm, itype):
    bare = jidlib.parse(frm).userhost()
    aff = room.get_affiliation(bare)
    if aff == "outcast":
        raise stanza_error("forbidden", "auth")
    # §9.9: with registration approval on, an unaffiliated user's registration is a
    # request that room admins approve (features/registration_approval.py)
    request = aff == "none" and not room.config.get("allow_unaffiliated_register")
    if request and not room.config.get("registration_approval"):
        raise stanza_error("registration-required", "auth")
    current = room.registered_nick(bare)
    if itype == "get":
        result = Element((NS_REGISTER, "query"))
        if current:
            result.addElement("registered")
            result.addElement("username", content=current)
        else:
            result.addChild(registration_form())
        return result
    children = list(query.elements())
    if any(c.name == "remove" for c in children):
        new_aff = aff if aff not in ("member",) else "none"
        if bare in room.service.admins:
            new_aff = room.affiliations.get(bare, "none")
        room.set_affiliation(None, bare, new_aff, None, False)
        return None
    x = next((c for c in children if c.name == "x" and c.uri == NS_DATA), None)
    if x is None:
        raise stanza_error("bad-request", "modify", "Missing data form")
    if x.getAttribute("type") == "cancel":
        return None
    values = _form_values(x)
    if values.get("FORM_TYPE", [None])[0] != NS_MUC_REGISTER:
        raise stanza_error("bad-request", "modify", "Error in form")
    wanted = values.get("muc#register_roomnick") or []
    if len(wanted) != 1 or not wanted[0].strip():
        raise stanza_error("bad-request", "modify", "A nickname is required")
    j = jidlib.parse_or_none(room.jid + "/" + wanted[0])
    if j is None or not j.resource:
        raise stanza_error("bad-request", "modify", "Invalid nickname")
    nick = j.resource
    occ = room.occupants.get(nick)
    if occ is not None and occ.bare != bare:
        raise stanza_error("conflict", "cancel")
    holder = room.registered_jid(nick)
    if holder is not None and holder != bare:
        raise stanza_error("conflict", "cancel")
    if request:
        room.hooks.fire("muc-registration-request", Event(room=room, jid=bare, nick=nick,
                                                          form=values))
        return None
    if current != nick:
        data = dict(room.aff_data.get(bare) or {})
        data["nick"] = nick
        room.hooks.fire("muc-registration-submitted", Event(room=room, jid=bare, nick=nick,
                                                            form=values, data=data))
        new_aff = aff if aff != "none" else "member"
        if bare in room.service.admins and bare not in room.affiliations:
            new_aff = "owner"
        room.set_affiliation(None, bare, new_aff, None, data)
    return None
