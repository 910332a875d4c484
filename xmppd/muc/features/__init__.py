"""Room options, one module per option (see :mod:`xmppd.muc.hooks` for the API).

``FEATURES`` is the explicit load order. A module that is listed but not
present yet is skipped with a log line, so helpers can add modules in
parallel without breaking the service.
"""
import importlib

from twisted.logger import Logger

log = Logger()

FEATURES = [
    # core-owned
    "lock",
    "members_only",
    "presence_broadcast",
    "register",
    # room options
    "name",
    "description",
    "language",
    "persistent",
    "public",
    "password",
    "moderated",
    "whois",
    "max_users",
    "subject",
    "history",
    "archive",
    "invites",
    "voice_request",
    "private_messages",
    "admin_commands",
    "ratelimit",
    "occupant_id",
    "self_ping",
    "tombstones",
    "moderation",
    "registration_approval",
]


def load_features(names=None):
    """Import the feature modules; return their ``feature`` objects in order."""
    out = []
    for name in names or FEATURES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        feature = getattr(mod, "feature", None)
        if feature is None:
            log.warn("MUC feature module {name} has no 'feature'", name=name)
            continue
        out.append(feature)
    return out
