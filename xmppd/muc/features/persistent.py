"""Persistent or temporary rooms (muc#roomconfig_persistentroom).

The core saves persistent rooms to the RoomStore and destroys temporary
ones when the last occupant leaves. An owner may configure a room without
being in it, so turning persistence off in an empty room destroys it
right after the IQ result, as if its last occupant had just left.
"""
from xmppd.muc.hooks import Feature

feature = Feature("persistent", defaults={"persistent": False})


def _made_temporary(event, value):
    room = event.room
    if not value and not room.occupants:
        room.service.after_reply(lambda: room.service.room_maybe_empty(room))


feature.boolean_option(
    "persistent", "muc#roomconfig_persistentroom", priority=95,
    label="Persistent (room should remain even when it is empty)",
    desc="Rooms are automatically deleted when they are empty, unless this option is enabled",
    disco=("muc_persistent", "muc_temporary"), on_change=_made_temporary)
