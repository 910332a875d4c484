"""Public or hidden rooms (muc#roomconfig_publicroom).

Hidden rooms are left out of the service's disco#items (the core reads
``config["public"]``) and advertise ``muc_hidden`` instead of ``muc_public``.
"""
from xmppd.muc.hooks import Feature

# The default comes from cfg.muc_room_default_public (see MUCService).
feature = Feature("public", defaults={"public": False})


feature.boolean_option(
    "public", "muc#roomconfig_publicroom", priority=91,
    label="Include room information in public lists",
    desc="Enable this to allow people to find the room",
    disco=("muc_public", "muc_hidden"))
