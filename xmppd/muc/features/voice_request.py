"""Voice requests (XEP-0045 §7.13 / §8.6): muc#request forms sent to the bare room JID.

A visitor's request is turned into an approval form (type ``form``) that
is sent once, from the room, to every moderator. A moderator who submits
that form with ``muc#request_allow`` true grants voice (the usual role
change presence follows). Requests from occupants who already have voice,
and approvals for someone no longer a visitor, are accepted silently, as
Prosody does; a request from a non-occupant is not-acceptable.
"""
from twisted.words.xish.domish import Element
from wokkel.data_form import Field, Form, Option

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import NS_DATA

NS_REQUEST = "http://jabber.org/protocol/muc#request"

feature = Feature("voice_request")


def _request_form(x):
    """Values of a muc#request form (FORM_TYPE checked leniently: no type='hidden' needed)."""
    values = {}
    for field in x.elements():
        if field.name != "field" or not field.getAttribute("var"):
            continue
        vals = [str(v) for v in field.elements() if v.name == "value"]
        values[field["var"]] = vals[0].strip() if vals else None
    return values if values.get("FORM_TYPE") == NS_REQUEST else None


def _find_request(stanza):
    for x in stanza.elements():
        if x.name == "x" and x.uri == NS_DATA and x.getAttribute("type") in ("submit", None):
            values = _request_form(x)
            if values is not None:
                return values
    return None


def approval_form(occupant):
    form = Form("form", title="Voice request", formNamespace=NS_REQUEST,
                instructions=["To approve this request for voice, select the "
                              "\"Grant voice to this person?\" checkbox and submit the form."])
    form.addField(Field("list-single", var="muc#role", label="Requested role", value="participant",
                        options=[Option(r, r.capitalize()) for r in ("none", "visitor", "participant",
                                                                 "moderator")]))
    form.addField(Field("jid-single", var="muc#jid", label="User ID", value=occupant.jid))
    form.addField(Field("text-single", var="muc#roomnick", label="Room nickname",
                        value=occupant.nick))
    form.addField(Field("boolean", var="muc#request_allow", label="Grant voice to this person?",
                        value=False))
    return form.toElement()


def _truthy(value):
    return value in ("1", "true")


@feature.hook("muc-message-to-room")
def _voice(event):
    stanza = event.stanza
    if stanza.getAttribute("type") not in (None, "normal"):
        return None
    values = _find_request(stanza)
    if values is None:
        return None
    room, occ = event.room, event.occupant
    if occ is None:
        raise stanza_error("not-acceptable", "cancel", "You are not currently connected to this chat")
    if occ.role == "moderator":
        if not _truthy(values.get("muc#request_allow")):
            return True
        target = room.by_jid.get(values.get("muc#jid") or "")
        if target is None:
            nick = values.get("muc#roomnick")
            target = room.occupants.get(nick) if nick else None
        if target is None or target.role != "visitor":
            return True
        role = values.get("muc#role") or "participant"
        if role != "participant":
            raise stanza_error("not-allowed", "cancel", "Only voice can be granted this way")
        room.set_role(occ.jid, target, "participant", "Voice granted")
        return True
    if occ.role == "visitor" and (values.get("muc#role") or "participant") == "participant":
        msg = Element((None, "message"))
        msg["from"] = room.jid
        if stanza.getAttribute("id"):
            msg["id"] = stanza["id"]
        msg.addChild(approval_form(occ))
        room.route_many(msg, [j for o in room.occupants.values() if o.role == "moderator"
                              for j in (getattr(o, "sessions", None) or (o.jid,))])
    return True


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add(NS_REQUEST)
