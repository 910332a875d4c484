"""Tombstones for destroyed persistent rooms (as Prosody's ``muc_tombstones``).

When a persistent room is destroyed, its address is kept for a while as a
hidden, stored tombstone: any stanza to it (a join, a message, an IQ) gets
``<gone/>`` (type cancel, from the service) with the destroy reason as text
and, when the owner named an alternate venue (XEP-0045 §10.9), the URI
``xmpp:<venue>?join`` in the condition (RFC 6120 §8.3.3.5). So clients that
still have the old room in their bookmarks learn where it went instead of
silently re-creating an empty room. A tombstone ends after
``muc_tombstone_expiry`` seconds (checked when the address is used), or
when a service admin joins there (re-creating the room on purpose).
``muc_tombstones = false`` turns the feature off; at most
``muc_max_tombstones`` are kept (the oldest goes first). A tombstone is a
stored room whose config holds ``tombstone`` (``xmppdctl rooms`` flags it);
destroying it (admin ad-hoc command, ``xmppdctl room-destroy``) leaves no
new one, and ``xmppdctl room-destroy`` of a live room leaves none either
(the operator wants it gone).
"""
import time

from twisted.logger import Logger

from xmppd.muc.errors import NS_STANZAS, error_reply
from xmppd.muc.hooks import Event, Feature

log = Logger()

feature = Feature("tombstones")

MAX_REASON = 1000


def _cfg(service, key, default):
    return getattr(service.cfg, key, default)


@feature.hook("muc-room-destroyed", priority=-10)
def _bury(event):
    room = event.room
    service = room.service
    if not room.config.get("persistent") or room.config.get("tombstone") \
            or not getattr(event, "tombstone", True):
        return None
    if not _cfg(service, "muc_tombstones", True):
        return None
    ttl = int(_cfg(service, "muc_tombstone_expiry", 86400 * 31))
    limit = int(_cfg(service, "muc_max_tombstones", 1000))
    if ttl <= 0 or limit <= 0:
        return None
    graves = sorted((r.config["tombstone"].get("expires", 0), r) for r in service.rooms.values()
                    if r.config.get("tombstone"))
    while len(graves) >= limit:
        _, oldest = graves.pop(0)
        _remove(oldest)
    from xmppd.muc.room import Room   # (import cycle: room imports the feature API)
    tomb = Room(service, room.jid, {
        "persistent": True, "public": False,
        "tombstone": {"expires": int(time.time()) + ttl,
                      "reason": (getattr(event, "reason", None) or "")[:MAX_REASON],
                      "alternate": getattr(event, "alternate", None) or ""}})
    service.rooms[room.jid] = tomb
    service.save_room(tomb)
    return None


def _remove(tomb):
    tomb.destroying = True
    tomb.service.forget_room(tomb, delete=True)


@feature.hook("muc-tombstone-stanza")
def _stanza(event):
    """A stanza to a tombstone: ``gone``; or None when the tombstone is lifted (expired, admin join)."""
    tomb, stanza = event.room, event.stanza
    grave = tomb.config["tombstone"]
    admin_join = (stanza.name == "presence" and stanza.getAttribute("type") is None
                  and event.jid.split("/", 1)[0] in tomb.service.admins)
    if grave.get("expires", 0) < time.time() or admin_join:
        _remove(tomb)
        return None
    stype = stanza.getAttribute("type")
    if stype == "error" or (stanza.name == "presence" and stype == "unavailable") \
            or (stanza.name == "iq" and stype == "result"):
        return True
    reply = error_reply(stanza, "gone", "cancel", text=grave.get("reason") or None,
                        by=tomb.service.domain)
    if grave.get("alternate"):
        for err in reply.elements():
            for cond in err.elements():
                if cond.name == "gone" and cond.uri == NS_STANZAS:
                    cond.addContent("xmpp:" + grave["alternate"] + "?join")
    tomb.service.send(reply)
    return True


def is_tombstone(room):
    return bool(room.config.get("tombstone"))


__all__ = ["feature", "is_tombstone", "Event"]
