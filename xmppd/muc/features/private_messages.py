"""Who may send private messages (muc#roomconfig_allowpm; XEP-0045 §7.5).

'anyone' (default), 'participants' (anyone with voice), 'moderators' or
'none'. A refused private message gets forbidden (auth).
"""
from wokkel.data_form import Field, Option

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import ROLES

feature = Feature("private_messages", defaults={"allow_pm": "anyone"})

OPTIONS = (("anyone", "Anyone"), ("participants", "Anyone with voice"),
           ("moderators", "Moderators only"), ("none", "Nobody"))
MIN_ROLE = {"anyone": ROLES["visitor"], "participants": ROLES["participant"],
            "moderators": ROLES["moderator"], "none": ROLES["moderator"] + 1}


@feature.hook("muc-config-form", priority=78)
def _form(event):
    event.form.append(Field("list-single", var="muc#roomconfig_allowpm",
                            label="Who may send private messages",
                            value=event.room.config.get("allow_pm") or "anyone",
                            options=[Option(v, label) for v, label in OPTIONS]))


@feature.hook("muc-config-submitted/muc#roomconfig_allowpm")
def _submitted(event):
    if event.room.set_config("allow_pm", event.value or "anyone"):
        event.status_codes.add("104")


@feature.hook("muc-private-message")
def _check(event):
    needed = MIN_ROLE.get(event.room.config.get("allow_pm") or "anyone", ROLES["visitor"])
    if ROLES[event.occupant.role] < needed:
        raise stanza_error("forbidden", "auth",
                           "You are not allowed to send private messages in this room")
