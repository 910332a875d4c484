"""Public or hidden rooms (muc#roomconfig_publicroom).

Hidden rooms are left out of the service's disco#items (the core reads
``config["public"]``) and advertise ``muc_hidden`` instead of ``muc_public``.
"""
from wokkel.data_form import Field

from xmppd.muc.hooks import Feature

# The default comes from cfg.muc_room_default_public (see MUCService).
feature = Feature("public", defaults={"public": False})


@feature.hook("muc-config-form", priority=91)
def _form(event):
    event.form.append(Field("boolean", var="muc#roomconfig_publicroom",
                            label="Include room information in public lists",
                            desc="Enable this to allow people to find the room",
                            value=bool(event.room.config.get("public"))))


@feature.hook("muc-config-submitted/muc#roomconfig_publicroom")
def _submitted(event):
    if event.room.set_config("public", bool(event.value)):
        event.status_codes.add("104")


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add("muc_public" if event.room.config.get("public") else "muc_hidden")
