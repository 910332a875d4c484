"""Room description (muc#roomconfig_roomdesc, shown as muc#roominfo_description)."""
from wokkel.data_form import Field

from xmppd.muc.hooks import Feature

feature = Feature("description", defaults={"description": ""})


@feature.hook("muc-config-form", priority=98)
def _form(event):
    event.form.append(Field("text-single", var="muc#roomconfig_roomdesc", label="Description",
                            desc="A brief description of the room",
                            value=event.room.config.get("description") or ""))


@feature.hook("muc-config-submitted/muc#roomconfig_roomdesc")
def _submitted(event):
    if event.room.set_config("description", event.value or ""):
        event.status_codes.add("104")


@feature.hook("muc-disco#info")
def _disco(event):
    event.form.append(Field("text-single", var="muc#roominfo_description", label="Description",
                            value=event.room.config.get("description") or ""))
