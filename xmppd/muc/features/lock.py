"""Room locking (XEP-0045 §10.1): a new room admits nobody else until configured.

The creator's join locks the room; the first submitted configuration form
(including an instant-room submit) unlocks it. ``muc_room_locking = false``
(Prosody's option) turns locking off: new rooms are open at once. Others get item-not-found
while it is locked, as if the room did not exist yet.
"""
from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature

feature = Feature("lock", defaults={"locked": False})


@feature.hook("muc-room-pre-create", priority=10)
def _lock(event):
    if getattr(event.room.service.cfg, "muc_room_locking", True):
        event.room.config["locked"] = True


@feature.hook("muc-occupant-pre-join", priority=-30)
def _deny_while_locked(event):
    if not event.is_new_room and event.room.config.get("locked"):
        # Prosody answers from the service (by=<muc domain>), as for a missing room
        err = stanza_error("item-not-found", "cancel", "This room is locked")
        err.by = event.room.service.domain
        raise err


@feature.hook("muc-config-submitted", priority=-1)
def _unlock(event):
    event.room.config["locked"] = False
