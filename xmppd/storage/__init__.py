"""Storage: accounts, rooms, affiliations, reserved nicks, offline messages (SQLite by default).

``open_storage(cfg)`` returns a :class:`Storage` service whose parts callers
use through their methods only, so another backend (PostgreSQL is planned)
can provide the same objects without touching the MUC or c2s code:

* ``storage.accounts`` -- :class:`xmppd.storage.accounts.AccountStore`
* ``storage.rooms``    -- :class:`xmppd.storage.rooms.RoomStore`
* ``storage.offline``  -- :class:`xmppd.storage.offline.OfflineStore`
* ``storage.blocklist`` -- :class:`xmppd.storage.blocklist.BlocklistStore` (XEP-0191)
* ``storage.personal`` -- :class:`xmppd.storage.personal.PersonalStore` (PEP, vCards, private XML)
* ``storage.archive``  -- :class:`xmppd.storage.archive.AsyncArchiveStore` (MAM; None if absent)
* ``storage.push``     -- :class:`xmppd.storage.push.PushStore` (XEP-0357 registrations)

Contract for every backend: a write method returns a Deferred that fires
once its change is committed (so the caller acknowledges it to a client only
then) and fails on error (``xmppd.storage.db.error_condition(exc)`` maps the
exception to the stanza error the client gets); writes commit in call order;
the caller's in-memory state is the live truth meanwhile. Start-up reads
(``rooms.load_all``) and single-row lookups (``accounts.get_hash/exists``)
are synchronous; offline-message reads return Deferreds.

SQLite: writes run on one dedicated writer thread with its own connection
(:mod:`xmppd.storage.writer`), so a commit's fsync never stalls the
reactor; the reactor's own connection only reads (WAL: readers are never
blocked by the writer).

The SQLite file is ``<data_dir>/xmppd.sqlite3``; its schema is versioned
(``PRAGMA user_version``) and migrated forward by
:mod:`xmppd.storage.migrations` when it is opened. The server holds an
exclusive ``flock`` on ``<data_dir>/xmppd.lock`` (one server per data dir;
``xmppdctl restore`` checks it). ``xmppdctl`` reaches the running server
through the ``admin_requests`` table, polled every second (a ``PRAGMA
data_version`` read when nothing changed).

With ``storage = "postgresql"`` the same stores run on
:class:`xmppd.storage.postgresql.PgDatabase` (same interface, the stores'
SQL unchanged, its own migrations); see that module.
"""
import fcntl
import os
import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from xmppd.storage.db import Database, StorageError

DB_FILENAME = "xmppd.sqlite3"
LOCK_FILENAME = "xmppd.lock"
REQUEST_POLL_SECONDS = 1.0

log = Logger(namespace="xmppd.storage")


class Storage(service.Service):
    """The stores plus the admin-request queue that ``xmppdctl`` uses to reach the live server."""

    def __init__(self, db, accounts, rooms, offline, lock=None, writer=None):
        self.db = db
        self.writer = writer
        self.accounts = accounts
        self.rooms = rooms
        self.offline = offline
        self.blocklist = None        # set by the backend (XEP-0191 blocklists)
        self.personal = None         # set by the backend (PEP, vCards, private XML)
        self.archive = None      # set by open_storage (message archives)
        self.push = None         # set by open_storage (XEP-0357 push registrations)
        self.lock = lock
        self.request_handlers = {}   # command -> fn(arg)
        self._poller = None
        self._data_version = None
        self._handled = set()   # admin request ids whose deletion is not committed yet

    def write(self, fn, *args):
        """Run ``fn(db, *args)`` on the writer thread; Deferred fired once committed."""
        return self._write(fn, *args)

    def _write(self, fn, *args):
        if self.writer is not None:
            return self.writer.run(fn, *args)
        return defer.maybeDeferred(fn, self.db, *args)

    def startService(self):
        super().startService()
        if self.writer is not None:
            self.writer.start()
        # Requests queued while the server was down are moot: the database is already right.
        self._write(lambda db: db.execute("DELETE FROM admin_requests")).addErrback(
            lambda f: log.failure("storage: could not clear old admin requests (is the disk full?)", f))
        self._poller = task.LoopingCall(self.poll_requests)
        self._poller.start(REQUEST_POLL_SECONDS, now=False)

    def stopService(self):
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        super().stopService()
        if self.archive is not None:
            self.archive.sync()          # archived messages still in memory go first
        d = self.writer.stop() if self.writer is not None else defer.succeed(None)

        def close(_):
            self.db.close()
            if self.lock is not None:
                self.lock.close()

        return d.addBoth(close)

    def poll_requests(self):
        """Run queued ``xmppdctl`` requests; cheap when nothing changed (PRAGMA data_version)."""
        try:
            version = self.db.data_version()
            if version is not None and version == self._data_version:
                return
            self._data_version = version
            rows = self.db.query("SELECT id, command, arg FROM admin_requests ORDER BY id")
            for req_id, command, arg in rows:
                if req_id in self._handled:
                    continue
                handler = self.request_handlers.get(command)
                if handler is None:
                    # another process on the same database may serve it (an xmppd-muc
                    # node destroys rooms); the queue is cleared at start-up
                    continue
                self._handled.add(req_id)
                d = self._write(lambda db, i: db.execute("DELETE FROM admin_requests WHERE id = ?",
                                                         (i,)), req_id)
                d.addErrback(lambda f: log.failure("storage: could not delete an admin request", f))
                d.addBoth(lambda _, i=req_id: self._handled.discard(i))
                try:
                    handler(arg)
                except Exception:
                    log.failure("storage: admin request {cmd} {arg} failed", cmd=command, arg=arg)
        except Exception:
            log.failure("storage: polling admin requests failed")


def delete_account_data(db, cfg, username):
    """Delete an account and every per-account record with it (one transaction).

    The one place account deletion happens: ``xmppdctl deluser``, XEP-0133
    delete-user and in-band ``<remove/>`` all call it; a new per-account
    table adds its DELETE here.
    """
    from xmppd.storage.accounts import AccountStore
    from xmppd.storage.archive import ArchiveStore
    from xmppd.storage.blocklist import BlocklistStore
    from xmppd.storage.offline import OfflineStore
    from xmppd.storage.personal import PersonalStore
    from xmppd.storage.push import PushStore
    with db.transaction():       # the stores' statements join this transaction
        AccountStore(db, cfg).delete(username)
        OfflineStore(db, cfg).delete_account(username)
        BlocklistStore(db, cfg).delete_account(username)
        PersonalStore(db, cfg).delete_account(username)    # PEP, vCards, private XML
        ArchiveStore(db, cfg).delete_account(f"{username}@{cfg.domain}")
        PushStore(db, cfg).delete_account(username)        # XEP-0357 registrations
    from xmppd.storage import files
    files.delete_owner(cfg.data_dir, f"{username}@{cfg.domain}")   # XEP-0363 uploads


def get_setting(db, name, default=None):
    rows = db.query("SELECT value FROM server_settings WHERE name = ?", (name,))
    return rows[0][0] if rows else default


def set_setting(db, name, value):
    """Store (or with ``value`` None delete) one server setting."""
    if value is None:
        db.execute("DELETE FROM server_settings WHERE name = ?", (name,))
    else:
        db.execute("INSERT INTO server_settings (name, value) VALUES (?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))


def clear_all_data(db):
    """Empty every table (``xmppdctl reset``): accounts, rooms, offline messages, settings..."""
    tables = db.tables()
    with db.transaction() as conn:
        for t in tables:
            conn.execute(f'DELETE FROM "{t}"')


def enqueue_request(db, command, arg):
    """Ask a running server to do ``command`` (picked up within a second)."""
    db.execute("INSERT INTO admin_requests (command, arg, created) VALUES (?, ?, ?)",
               (command, arg, time.time()))


def lock_data_dir(data_dir):
    """Hold an exclusive lock on the data dir for the server's lifetime; StorageError if taken."""
    path = os.path.join(data_dir, LOCK_FILENAME)
    try:
        f = open(path, "a")
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror or e}")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StorageError(f"data directory {data_dir} is in use by another xmppd")
    return f


def server_running(data_dir):
    """True if a server holds the data-dir lock (used by xmppdctl)."""
    path = os.path.join(data_dir, LOCK_FILENAME)
    if not os.path.exists(path):
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def db_path(data_dir):
    return os.path.join(data_dir, DB_FILENAME)


def open_database(data_dir):
    """Create ``data_dir`` if needed and open (check, migrate) its database; StorageError otherwise."""
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create data directory {data_dir}: {e.strerror or e}")
    return Database(db_path(data_dir))


def open_configured_database(cfg):
    """The database ``cfg`` names: SQLite in the data dir, or PostgreSQL at ``storage_dsn``."""
    if cfg.storage == "postgresql":
        from xmppd.storage.postgresql import PgDatabase
        return PgDatabase(cfg.storage_dsn)
    return open_database(cfg.data_dir)


def open_storage(cfg):
    from xmppd.config import ConfigError
    from xmppd.storage.accounts import AsyncAccountStore
    from xmppd.storage.offline import AsyncOfflineStore
    from xmppd.storage.rooms import AsyncRoomStore
    from xmppd.storage.writer import Writer
    lock = None
    try:
        os.makedirs(cfg.data_dir, exist_ok=True)
        lock = lock_data_dir(cfg.data_dir)
        db = open_configured_database(cfg)
    except (StorageError, OSError) as e:
        if lock is not None:
            lock.close()
        raise ConfigError(f"storage: {e}")
    log.info("storage: {backend} at {path}", backend=db.backend, path=db.path)
    if db.migrated_from != db.version:
        log.info("storage: migrated {path} from schema version {old} to {new}",
                 path=db.path, old=db.migrated_from, new=db.version)
    opener = None
    if cfg.storage == "postgresql":
        from xmppd.storage.postgresql import PgDatabase
        opener = lambda: PgDatabase(cfg.storage_dsn, check=False)  # noqa: E731
    writer = Writer(db.path, db, opener=opener)
    storage = Storage(db, AsyncAccountStore(db, cfg, writer), AsyncRoomStore(db, cfg, writer),
                      AsyncOfflineStore(db, cfg, writer), lock, writer)
    from xmppd.storage.blocklist import AsyncBlocklistStore
    storage.blocklist = AsyncBlocklistStore(db, cfg, writer)
    from xmppd.storage.personal import AsyncPersonalStore
    storage.personal = AsyncPersonalStore(db, cfg, writer)   # PEP, vCards, private XML
    from xmppd.storage.archive import AsyncArchiveStore
    storage.archive = AsyncArchiveStore(db, cfg, writer)
    from xmppd.storage.push import AsyncPushStore
    storage.push = AsyncPushStore(db, cfg, writer)
    return storage
