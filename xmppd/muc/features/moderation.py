"""XEP-0425 message moderation (with XEP-0424 retraction): a moderator retracts a room message.

The request is an IQ set to the room, ``<moderate id='<stanza-id>'
xmlns='urn:xmpp:message-moderate:1'><retract
xmlns='urn:xmpp:message-retract:1'/><reason/></moderate>``, where the id is
the room's XEP-0359 stanza-id of the message. Only occupants whose role is
moderator may do it (forbidden otherwise, §"Error case"). The room then
broadcasts, from the room JID, ``<retract id=…><moderated by='room/nick'>
<occupant-id/></moderated><reason/></retract>`` to every occupant
(§"Success case": the moderator's client learns of it the same way) and
answers the moderator.

Archive: when a room archive is present (``features/archive.py``, a
separate issue), the archived message is replaced by a tombstone through
``archive.tombstone(room, stanza_id, element)``; a message the archive does
not know is item-not-found. Without an archive there is nothing to check
against: the retraction is broadcast (clients ignore unknown ids). Either
way ``muc-message-moderated`` fires (room, stanza_id, actor, occupant,
reason, tombstone) for anything else that keeps messages.
"""
import datetime
import uuid

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.xish.domish import Element

from xmppd.muc.errors import error_reply, stanza_error
from xmppd.muc.hooks import Event, Feature
from xmppd.muc.room import NS_OCCUPANT_ID

log = Logger()

NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_RETRACT = "urn:xmpp:message-retract:1"
MAX_REASON = 1000

feature = Feature("moderation")


def _archive_tombstone(room, stanza_id, element):
    """The archive feature's tombstone(), or None when rooms have no archive."""
    try:
        from xmppd.muc.features import archive
    except ImportError:
        return None
    fn = getattr(archive, "tombstone", None)
    logged = getattr(archive, "logged", None)
    if fn is None or (logged is not None and not logged(room)):
        return None
    return fn(room, stanza_id, element)


def _moderated(room, actor_occ, reason, wrapper):
    """The <retract/> (or <retracted/>) content naming the moderator."""
    mod = wrapper.addElement((NS_MODERATE, "moderated"))
    mod["by"] = actor_occ.room_jid
    if actor_occ.occupant_id:
        mod.addElement((NS_OCCUPANT_ID, "occupant-id"))["id"] = actor_occ.occupant_id
    if reason:
        wrapper.addElement("reason", content=reason)
    return wrapper


@feature.hook(f"muc-room-iq/{NS_MODERATE}")
def _moderate(event):
    room, iq, q = event.room, event.stanza, event.query
    if q.name != "moderate" or iq.getAttribute("type") != "set":
        raise stanza_error("bad-request", "modify")
    actor = room.by_jid.get(event.jid)
    if actor is None or actor.role != "moderator":
        raise stanza_error("forbidden", "auth",
                           "Only moderators are allowed to moderate other participants' messages")
    stanza_id = q.getAttribute("id")
    retract = reason = None
    for c in q.elements():
        if c.name == "retract" and c.uri == NS_RETRACT:
            retract = c
        elif c.name == "reason":
            reason = str(c)[:MAX_REASON] or None
    if not stanza_id or retract is None:
        raise stanza_error("bad-request", "modify", "A stanza id and <retract/> are required")

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    tomb = Element((None, "message"))
    tomb["type"] = "groupchat"
    tomb["from"] = room.jid
    _moderated(room, actor, reason,
               tomb.addElement((NS_RETRACT, "retracted")))["stamp"] = now

    def announce(found):
        if found is False:
            room.service.send(error_reply(iq, "item-not-found", "cancel"))
            return
        msg = Element((None, "message"))
        msg["type"] = "groupchat"
        msg["from"] = room.jid
        msg["id"] = uuid.uuid4().hex
        r = msg.addElement((NS_RETRACT, "retract"))
        r["id"] = stanza_id
        _moderated(room, actor, reason, r)
        msg.addElement((None, "body"),
                       content="This message has been retracted by a moderator")
        msg.addElement(("urn:xmpp:fallback:0", "fallback"))["for"] = NS_RETRACT
        msg.addElement(("urn:xmpp:hints", "store"))
        room.broadcast_message(msg)     # (kept in the join history after the message it retracts)
        room.hooks.fire("muc-message-moderated", Event(room=room, stanza_id=stanza_id, actor=actor,
                                                       reason=reason, tombstone=tomb))
        reply = Element((None, "iq"))
        reply["type"] = "result"
        reply["to"] = iq["from"]
        reply["from"] = room.jid
        if iq.getAttribute("id"):
            reply["id"] = iq["id"]
        room.service.send(reply)

    def failed(f):
        log.failure("moderation of {sid} in {room} failed", f, sid=stanza_id, room=room.jid)
        room.service.send(error_reply(iq, "internal-server-error", "wait"))

    d = _archive_tombstone(room, stanza_id, tomb)
    if d is None:
        announce(None)
    else:
        defer.maybeDeferred(lambda: d).addCallback(announce).addErrback(failed)
    return True


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add(NS_MODERATE)
