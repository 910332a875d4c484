"""What the running server does for ``xmppdctl`` requests queued in the database.

``xmppdctl room-destroy ROOM`` deletes the stored room itself (so it works
with the server down) and queues ``room-destroy``; a running server then
destroys the live room too (occupants get the XEP-0045 destroy presence),
otherwise its next change would write the room back.
"""
from twisted.logger import Logger

log = Logger(namespace="xmppd.admin")


def install(router, cfg, store):
    if any(c["domain"] == cfg.muc_domain for c in getattr(cfg, "components", ())):
        return        # the MUC is an xmppd-muc process: it serves room-destroy itself
    install_room_destroy(store, lambda: getattr(router, "muc", None))


def install_room_destroy(store, get_muc):
    """Serve ``room-destroy`` requests with the live rooms of ``get_muc()`` (a MUCService)."""
    handlers = getattr(store, "request_handlers", None)
    if handlers is None:
        return

    def room_destroy(room_jid):
        muc = get_muc()
        room = muc.rooms.get(room_jid) if muc is not None else None
        if room is None:
            return
        log.info("destroying room {room} on request of xmppdctl", room=room_jid)
        room.destroy(reason="Destroyed by the server administrator", tombstone=False)

    handlers["room-destroy"] = room_destroy
