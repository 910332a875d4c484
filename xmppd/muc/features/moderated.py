"""Moderated rooms (muc#roomconfig_moderatedroom; XEP-0045 §8.3-8.6).

Unaffiliated users enter as visitors and cannot speak (the core refuses
groupchat from visitors); members and above still enter as participants.
Voice requests are in :mod:`voice_request`. Switching the option changes
nobody's current role.
"""
from xmppd.muc.hooks import Feature

feature = Feature("moderated", defaults={"moderated": False})


feature.boolean_option(
    "moderated", "muc#roomconfig_moderatedroom", priority=77,
    label="Moderated (require permission to speak)",
    desc="In moderated rooms occupants must be given permission to speak by a room moderator",
    disco=("muc_moderated", "muc_unmoderated"))


@feature.hook("muc-get-default-role", priority=1)
def _visitor(event):
    if event.affiliation == "none" and event.room.config.get("moderated"):
        return "visitor"

