"""Room subject (XEP-0045 §8.1, §7.2.15; muc#roomconfig_changesubject).

A groupchat message with ``<subject/>`` and neither ``<body/>`` nor
``<thread/>`` is a subject change: moderators may always make it,
participants only when ``changesubject`` is on (visitors never speak, the
core refuses them first); others get forbidden. The change is reflected
from the changer's occupant JID with the request's id, and remembered
(``subject``, ``subject_from``, ``subject_time``) so the core can send it
to every joiner after the history (empty ``<subject/>`` when unset).
A message carrying a subject and a body is an ordinary message.
"""
import datetime

from twisted.words.xish.domish import Element
from wokkel.data_form import Field

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature

feature = Feature("subject", defaults={"changesubject": False, "subject": "",
                                       "subject_from": "", "subject_time": ""})


def subject_change(stanza):
    """The <subject/> of a subject-change message, or None for anything else."""
    subject = None
    for c in stanza.elements():
        if c.name in ("body", "thread") and c.uri in (None, "jabber:client", stanza.uri):
            return None
        if c.name == "subject" and c.uri in (None, "jabber:client", stanza.uri) and subject is None:
            subject = c
    return subject


def set_subject(room, from_jid, text, msg_id=None, occupant_id=None):
    """Store and broadcast a new subject (``from_jid``: occupant JID or the room's).

    In a persistent room the broadcast (the changer's acknowledgement) waits
    for the commit; the MUC holds the room's other stanzas meanwhile, so the
    order occupants see is unchanged. If the commit fails the old subject
    is put back and the changer gets the error.
    """
    keys = ("subject", "subject_from", "subject_time")
    before = {k: room.config[k] for k in keys if k in room.config}
    room.config["subject"] = text
    room.config["subject_from"] = from_jid
    room.config["subject_time"] = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    msg = Element((None, "message"))
    msg["type"] = "groupchat"
    msg["from"] = from_jid
    if msg_id:
        msg["id"] = msg_id
    msg.addElement("subject", content=text)
    if occupant_id:
        msg.addElement(("urn:xmpp:occupant-id:0", "occupant-id"))["id"] = occupant_id
    d = room.save()
    if d is None:
        room.broadcast_message(msg)
        return

    def failed(f):
        for k in keys:
            room.config.pop(k, None)
        room.config.update(before)
        return f

    d.addCallbacks(lambda _: room.broadcast_message(msg), failed)


@feature.hook("muc-occupant-groupchat", priority=20)
def _change(event):
    subject = subject_change(event.stanza)
    if subject is None:
        return None
    room, occ = event.room, event.occupant
    if not (occ.role == "moderator" or
            (occ.role == "participant" and room.config.get("changesubject"))):
        raise stanza_error("forbidden", "auth", "You are not allowed to change the subject")
    set_subject(room, occ.room_jid, str(subject), event.stanza.getAttribute("id"),
                occ.occupant_id)
    return True


@feature.hook("muc-config-form", priority=79)
def _form(event):
    event.form.append(Field("boolean", var="muc#roomconfig_changesubject",
                            label="Allow anyone to set the room's subject",
                            desc="Choose whether anyone, or only moderators, may set the "
                                 "room's subject",
                            value=bool(event.room.config.get("changesubject"))))


@feature.hook("muc-config-submitted/muc#roomconfig_changesubject")
def _submitted(event):
    if event.room.set_config("changesubject", bool(event.value)):
        event.status_codes.add("104")


@feature.hook("muc-disco#info")
def _disco(event):
    config = event.room.config
    event.form.append(Field("text-single", var="muc#roominfo_subject",
                            label="Current Discussion Topic", value=config.get("subject") or ""))
    event.form.append(Field("boolean", var="muc#roomconfig_changesubject",
                            label="Subject can be modified",
                            value=bool(config.get("changesubject"))))
