"""Persistent or temporary rooms (muc#roomconfig_persistentroom).

The core saves persistent rooms to the RoomStore and destroys temporary
ones when the last occupant leaves. An owner may configure a room without
being in it, so turning persistence off in an empty room destroys it
right after the IQ result, as if its last occupant had just left.
"""
from wokkel.data_form import Field

from xmppd.muc.hooks import Feature

feature = Feature("persistent", defaults={"persistent": False})


@feature.hook("muc-config-form", priority=95)
def _form(event):
    event.form.append(Field("boolean", var="muc#roomconfig_persistentroom",
                            label="Persistent (room should remain even when it is empty)",
                            desc="Rooms are automatically deleted when they are empty, "
                                 "unless this option is enabled",
                            value=bool(event.room.config.get("persistent"))))


@feature.hook("muc-config-submitted/muc#roomconfig_persistentroom")
def _submitted(event):
    room = event.room
    value = bool(event.value)
    if not room.set_config("persistent", value):
        return
    event.status_codes.add("104")
    if not value and not room.occupants:
        room.service.after_reply(lambda: room.service.room_maybe_empty(room))


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add("muc_persistent" if event.room.config.get("persistent") else "muc_temporary")
