"""Members-only rooms (muc#roomconfig_membersonly; XEP-0045 §7.2.6, §9.3-9.4).

Unaffiliated users cannot enter (registration-required) and their default
role is none; making a room members-only removes non-members (status 322);
a member who loses membership is removed by the core (321).
"""
from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import AFFILIATIONS

feature = Feature("members_only", defaults={"members_only": False})


def _remove_non_members(event, value):
    """Making the room members-only removes everyone unaffiliated (322)."""
    room = event.room
    if value:
        for occ in list(room.occupants.values()):
            if AFFILIATIONS[room.get_affiliation(occ.bare)] <= AFFILIATIONS["none"]:
                prev = occ.role
                occ.role = "none"
                room._remove(occ)
                room.publicise(occ, codes=("322",), prev_role=prev)
                room._left(occ, ("322",))


feature.boolean_option(
    "members_only", "muc#roomconfig_membersonly", priority=87,
    label="Only allow members to join",
    desc="Enable this to only allow access for room owners, admins and members",
    disco=("muc_membersonly", "muc_open"), on_change=_remove_non_members)


@feature.hook("muc-get-default-role", priority=2)
def _no_role(event):
    if event.room.config.get("members_only") and event.affiliation in ("none", "outcast"):
        return "none"


@feature.hook("muc-occupant-pre-join", priority=-5)
def _members_only(event):
    room = event.room
    if room.config.get("members_only") and \
            AFFILIATIONS[room.get_affiliation(event.occupant.bare)] <= AFFILIATIONS["none"]:
        raise stanza_error("registration-required", "auth", "This room is members-only")

