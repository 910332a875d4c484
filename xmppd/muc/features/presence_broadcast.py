"""muc#roomconfig_presencebroadcast: which roles' presence is broadcast.

Including role ``none`` shows affiliated users who are not in the room as
unavailable presences to joiners (Prosody's "show offline members").
Changing the setting announces (or hides) current occupants accordingly.
"""
from wokkel.data_form import Field, Option

from xmppd.muc.hooks import Feature

ROLE_ORDER = ["none", "visitor", "participant", "moderator"]
# every option carries a label: clients print it (profanity showed "(null)", poezio blanks)
ROLE_LABELS = {"none": "Not in the room (affiliated users)", "visitor": "Visitor",
               "participant": "Participant", "moderator": "Moderator"}
DEFAULT = ["moderator", "participant", "visitor"]

feature = Feature("presence_broadcast", defaults={"presence_broadcast": list(DEFAULT)})


@feature.hook("muc-config-form", priority=63)
def _form(event):
    current = event.room.config.get("presence_broadcast") or []
    event.form.append(Field("list-multi", var="muc#roomconfig_presencebroadcast",
                            label="Only show participants with roles:",
                            values=[r for r in ROLE_ORDER if r in current],
                            options=[Option(r, ROLE_LABELS[r]) for r in ROLE_ORDER]))


@feature.hook("muc-config-submitted/muc#roomconfig_presencebroadcast")
def _submitted(event):
    room = event.room
    new = [r for r in ROLE_ORDER if r in (event.value or [])]
    old = list(room.config.get("presence_broadcast") or [])
    if sorted(new) == sorted(old):
        return
    room.config["presence_broadcast"] = new
    event.status_codes.add("104")
    for occ in list(room.occupants.values()):
        if occ.role in new and occ.role not in old:
            room.publicise(occ)
        elif occ.role in old and occ.role not in new:
            room.publicise(occ, force_unavailable=True)
