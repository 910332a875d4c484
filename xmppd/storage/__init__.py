"""Storage: accounts, rooms, affiliations, reserved nicks (SQLite by default).

``open_storage(cfg)`` returns a :class:`Storage` service with two parts that
callers use through their interfaces only, so another backend can be added:

* ``storage.accounts`` -- :class:`xmppd.storage.accounts.AccountStore`
* ``storage.rooms``    -- :class:`xmppd.storage.rooms.RoomStore`
"""
import os

from twisted.application import service

from xmppd.storage.db import Database


class Storage(service.Service):
    def __init__(self, db, accounts, rooms):
        self.db = db
        self.accounts = accounts
        self.rooms = rooms

    def stopService(self):
        self.db.close()
        return super().stopService()


def open_storage(cfg):
    from xmppd.config import ConfigError
    from xmppd.storage.accounts import AccountStore
    from xmppd.storage.rooms import RoomStore
    try:
        os.makedirs(cfg.data_dir, exist_ok=True)
        db = Database(os.path.join(cfg.data_dir, "xmppd.sqlite3"))
    except Exception as e:  # unreadable dir, corrupt file, permissions
        raise ConfigError(f"cannot open storage in {cfg.data_dir}: {e}")
    return Storage(db, AccountStore(db, cfg), RoomStore(db, cfg))
