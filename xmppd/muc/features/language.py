"""Room language (muc#roomconfig_lang, shown as muc#roominfo_lang).

The value must look like an xs:language tag (RFC 5646 shape: 1-8
alphanumerics separated by hyphens); anything else is not-acceptable, so a
client typo does not end up advertised in disco.
"""
import re

from wokkel.data_form import Field

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature

feature = Feature("language", defaults={"language": ""})

_LANG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")


@feature.hook("muc-config-form", priority=97)
def _form(event):
    event.form.append(Field("text-single", var="muc#roomconfig_lang",
                            label="Language tag for room (e.g. 'en', 'de', 'fr' etc.)",
                            desc="Indicate the primary language spoken in this room",
                            value=event.room.config.get("language") or ""))


@feature.hook("muc-config-submitted", priority=10)
def _validate(event):
    value = (event.form.get("muc#roomconfig_lang") or "").strip()
    if value and not _LANG.match(value):
        raise stanza_error("not-acceptable", "modify", "Invalid language tag")


@feature.hook("muc-config-submitted/muc#roomconfig_lang")
def _submitted(event):
    if event.room.set_config("language", (event.value or "").strip()):
        event.status_codes.add("104")


@feature.hook("muc-disco#info")
def _disco(event):
    event.form.append(Field("text-single", var="muc#roominfo_lang",
                            label="Natural Language for Room Discussions",
                            value=event.room.config.get("language") or ""))
