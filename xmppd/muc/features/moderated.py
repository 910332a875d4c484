"""Moderated rooms (muc#roomconfig_moderatedroom; XEP-0045 §8.3-8.6).

Unaffiliated users enter as visitors and cannot speak (the core refuses
groupchat from visitors); members and above still enter as participants.
Voice requests are in :mod:`voice_request`. Switching the option changes
nobody's current role.
"""
from wokkel.data_form import Field

from xmppd.muc.hooks import Feature

feature = Feature("moderated", defaults={"moderated": False})


@feature.hook("muc-config-form", priority=77)
def _form(event):
    event.form.append(Field("boolean", var="muc#roomconfig_moderatedroom",
                            label="Moderated (require permission to speak)",
                            desc="In moderated rooms occupants must be given permission "
                                 "to speak by a room moderator",
                            value=bool(event.room.config.get("moderated"))))


@feature.hook("muc-config-submitted/muc#roomconfig_moderatedroom")
def _submitted(event):
    if event.room.set_config("moderated", bool(event.value)):
        event.status_codes.add("104")


@feature.hook("muc-get-default-role", priority=1)
def _visitor(event):
    if event.affiliation == "none" and event.room.config.get("moderated"):
        return "visitor"


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add("muc_moderated" if event.room.config.get("moderated") else "muc_unmoderated")
