"""Occupant limit (muc#roomconfig_maxusers; XEP-0045 §7.2.9).

``config["max_users"]`` is 0 for "no room limit"; the service-wide
``cfg.muc_max_occupants`` (0 = none) caps every room and bounds the
choices offered. A full room refuses joiners with service-unavailable
(type wait, as in the XEP's example); admins and owners may still enter,
as §7.2.9 requires.
"""
from wokkel.data_form import Field, Option

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature

feature = Feature("max_users", defaults={"max_users": 0})

CHOICES = (10, 20, 30, 50, 100)


def service_cap(room):
    return int(getattr(room.service.cfg, "muc_max_occupants", 0) or 0)


def effective_limit(room):
    """The occupant limit in force (0 = unlimited)."""
    mine = int(room.config.get("max_users") or 0)
    cap = service_cap(room)
    if cap and (not mine or mine > cap):
        return cap
    return mine


@feature.hook("muc-config-form", priority=86)
def _form(event):
    room = event.room
    cap = service_cap(room)
    current = int(room.config.get("max_users") or 0)
    choices = [n for n in CHOICES if not cap or n <= cap]
    if cap and cap not in choices:
        choices.append(cap)
    if current and current not in choices:
        choices.append(current)
    options = [Option(str(n), str(n)) for n in sorted(choices)]
    if not cap:
        options.append(Option("none", "None"))
    value = str(current) if current else ("none" if not cap else str(cap))
    event.form.append(Field("list-single", var="muc#roomconfig_maxusers",
                            label="Maximum number of occupants", value=value, options=options))


@feature.hook("muc-config-submitted/muc#roomconfig_maxusers")
def _submitted(event):
    value = event.value
    limit = 0 if value in (None, "", "none") else int(value)
    if event.room.set_config("max_users", limit):
        event.status_codes.add("104")


@feature.hook("muc-occupant-pre-join", priority=-25)
def _full(event):
    room = event.room
    limit = effective_limit(room)
    if not limit or len(room.occupants) < limit:
        return
    if event.affiliation in ("admin", "owner"):
        return
    raise stanza_error("service-unavailable", "wait", "This room is full")
