"""Room title (muc#roomconfig_roomname): disco identity name and service disco#items name."""
from wokkel.data_form import Field

from xmppd.muc.hooks import Feature

feature = Feature("name", defaults={"name": ""})


def _field(room):
    return Field("text-single", var="muc#roomconfig_roomname", label="Title",
                 value=room.config.get("name") or "")


@feature.hook("muc-config-form", priority=99)
def _form(event):
    event.form.append(_field(event.room))


@feature.hook("muc-config-submitted/muc#roomconfig_roomname")
def _submitted(event):
    if event.room.set_config("name", (event.value or "").strip()):
        event.status_codes.add("104")


@feature.hook("muc-disco#info")
def _disco(event):
    name = event.room.config.get("name") or ""
    event.identity_name = name or None
    # Prosody repeats the title in the roominfo form (XEP-0045 §6.4 allows any roomconfig field)
    event.form.append(Field("text-single", var="muc#roomconfig_roomname", label="Title", value=name))
