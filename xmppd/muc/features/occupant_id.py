"""XEP-0421 occupant identifiers: a stable, unforgeable id per room and real bare JID.

Clients use it to tell that two nicks (or two visits) are the same person
without learning the real JID, e.g. to apply moderation or show avatars.
The id is ``base64(HMAC-SHA256(room salt, real bare JID))`` (§5: stable,
since the salt is kept in the room's config and stored with persistent
rooms; unique, since nobody can compute it without the salt). It is
computed once per occupant at join and kept, serialised, on the occupant
(``occupant.stamp``), so the MUC fan-out adds it to every presence copy
without building an element per recipient; messages get one element per
broadcast. The core strips any ``<occupant-id/>`` a client sends (§4: the
service replaces it). Enabled for every room, so the service advertises
the feature too (§6).
"""
import base64
import hashlib
import hmac
import os

from xmppd.muc.hooks import Feature
from xmppd.muc.room import NS_OCCUPANT_ID

feature = Feature("occupant_id", defaults={"occupant_id_salt": ""})


def occupant_id(room, bare):
    salt = room.config.get("occupant_id_salt")
    if not salt:
        # rooms created before this module (or loaded without a salt) get one now;
        # a persistent room stores it with its next save
        salt = room.config["occupant_id_salt"] = base64.b64encode(os.urandom(24)).decode()
        room.save()
    mac = hmac.new(salt.encode(), bare.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


@feature.hook("muc-room-pre-create", priority=20)
def _salt(event):
    event.room.config["occupant_id_salt"] = base64.b64encode(os.urandom(24)).decode()


@feature.hook("muc-occupant-pre-join", priority=100)
def _assign(event):
    occ = event.occupant
    occ.occupant_id = occupant_id(event.room, occ.bare)
    occ.stamp = f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='{occ.occupant_id}'/>"


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add(NS_OCCUPANT_ID)


@feature.on_install
def _install(service):
    features = getattr(service, "service_features", None)
    if features is not None:
        features.append(NS_OCCUPANT_ID)
