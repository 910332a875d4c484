"""Who may see occupants' real JIDs (muc#roomconfig_whois; XEP-0045 §7.2.3-7.2.4, §10.2).

'moderators' (semi-anonymous, the default) or 'anyone' (non-anonymous).
The core adds status 100 to the self-presence of joiners of non-anonymous
rooms; a change is announced with 172 (now non-anonymous) or 173 (now
semi-anonymous), the privacy codes of §10.2. Presences already sent are
not repeated (as in Prosody): the new setting applies from the next one.
"""
from wokkel.data_form import Field, Option

from xmppd.muc.hooks import Feature

feature = Feature("whois", defaults={"whois": "moderators"})

OPTIONS = (("moderators", "Moderators only"), ("anyone", "Anyone"))


@feature.hook("muc-config-form", priority=76)
def _form(event):
    event.form.append(Field("list-single", var="muc#roomconfig_whois",
                            label="Addresses (JIDs) of room occupants may be viewed by:",
                            value=event.room.config.get("whois") or "moderators",
                            options=[Option(v, label) for v, label in OPTIONS]))


@feature.hook("muc-config-submitted/muc#roomconfig_whois")
def _submitted(event):
    room = event.room
    value = event.value or "moderators"
    if not room.set_config("whois", value):
        return
    event.status_codes.add("172" if value == "anyone" else "173")


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add("muc_nonanonymous" if event.room.whois_anyone else "muc_semianonymous")
