"""One SQLite database file shared by the stores (WAL, foreign keys on).

The schema is owned by :mod:`xmppd.storage.migrations`; opening a
:class:`Database` checks the file (readable, writable, not corrupt, not from
a newer xmppd) and brings the schema up to date, so every process that opens
it (server, ``xmppdctl``) sees the same tables.

Calls on a :class:`Database` are synchronous, on the caller's thread, one
short transaction each. In the server, writes go through
:class:`xmppd.storage.writer.Writer` (one thread with its own connection),
whose Deferred fires after the commit, so a reply sent then never
acknowledges something that is not stored; the reactor's connection only
reads. With WAL and ``synchronous=NORMAL`` a commit costs tens of
microseconds and survives a process crash (``kill -9``);
``synchronous=FULL`` also survives a power cut but fsyncs on every commit
(milliseconds, on the writer thread; see ``benchmarks/storage_bench.py``).
The environment variable ``XMPPD_SQLITE_SYNCHRONOUS`` (NORMAL or FULL)
overrides the default.
"""
import os
import sqlite3

from xmppd.storage import migrations

BUSY_TIMEOUT_MS = 5000


class StorageError(Exception):
    """The database cannot be opened or used; the message is one line for the operator.

    ``condition`` is the XMPP stanza error condition a client should get
    when its request failed because of this.
    """

    def __init__(self, message, condition="internal-server-error"):
        super().__init__(message)
        self.condition = condition


def error_condition(exc):
    """The stanza error condition for a failed database call (full disk -> resource-constraint)."""
    if isinstance(exc, StorageError):
        return exc.condition
    if getattr(exc, "sqlstate", None) in ("53100", "53200"):    # PostgreSQL disk full, out of memory
        return "resource-constraint"
    code = getattr(exc, "sqlite_errorcode", None)
    if code == getattr(sqlite3, "SQLITE_FULL", 13) or "full" in str(exc).lower():
        return "resource-constraint"
    return "internal-server-error"


def _check_access(path):
    """Fail with a clear message before SQLite does something confusing."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        if os.path.isdir(path):
            raise StorageError(f"database {path} is a directory")
        if not os.access(path, os.R_OK):
            raise StorageError(f"database {path} is not readable (permission denied)")
        if not os.access(path, os.W_OK):
            raise StorageError(f"database {path} is not writable (permission denied)")
    # WAL needs to create <db>-wal and <db>-shm next to the file.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StorageError(f"data directory {directory} is not writable (permission denied)")


class Database:
    """A checked, migrated SQLite connection (``check_same_thread=False``, used by one thread at a time)."""

    backend = "sqlite"
    IntegrityError = sqlite3.IntegrityError

    def __init__(self, path, synchronous=None, check=True):
        self.path = path
        if synchronous is None:
            synchronous = os.environ.get("XMPPD_SQLITE_SYNCHRONOUS", "NORMAL").upper()
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise StorageError(f"XMPPD_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA, "
                               f"not {synchronous!r}")
        _check_access(path)
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                        timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open database {path}: {e}")
        try:
            self._open(check, synchronous)
        except migrations.SchemaError as e:
            self.conn.close()
            raise StorageError(f"{path}: {e}")
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise StorageError(f"database {path} is unusable ({e}); it was not modified. "
                               f"Restore a backup (xmppdctl restore) or move it away")

    def _open(self, check, synchronous):
        conn = self.conn
        # Read-only checks first: a corrupt or foreign file must not be written to.
        conn.execute("PRAGMA user_version").fetchone()
        if check:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                detail = "; ".join(r[0] for r in rows[:3])
                raise sqlite3.DatabaseError(f"integrity check failed: {detail}")
        version = migrations.current_version(conn)
        if version > migrations.LATEST:
            raise migrations.SchemaError(
                f"database schema version {version} is newer than this xmppd supports "
                f"({migrations.LATEST}); refusing to touch it")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        self.migrated_from = migrations.migrate(conn)
        self.version = migrations.current_version(conn)

    def data_version(self):
        """A counter that changes when another connection commits (cheap change polling)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def tables(self):
        return [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]

    def execute_script(self, sql):
        self.conn.executescript(sql)

    def execute(self, sql, args=()):
        """Run one statement in its own transaction (autocommit): committed when it returns."""
        return self.conn.execute(sql, args)

    def query(self, sql, args=()):
        return self.conn.execute(sql, args).fetchall()

    def transaction(self):
        """``with db.transaction() as conn:`` groups statements atomically; commits on exit."""
        return _Tx(self.conn)

    def backup(self, dest_path):
        """Write a consistent copy of the live database to ``dest_path`` (SQLite online backup).

        The copy is made into a temporary file and renamed, so ``dest_path``
        is either the old file or a complete backup, never half of one.
        """
        tmp = f"{dest_path}.tmp-{os.getpid()}"
        try:
            dest = sqlite3.connect(tmp, isolation_level=None)
            try:
                self.conn.backup(dest)
                dest.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            finally:
                dest.close()
            os.replace(tmp, dest_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def restore_from(self, src_path):
        """Replace the whole database content with the backup at ``src_path``, atomically.

        The backup is checked (integrity, schema not newer than ours) before
        anything is written; other connections see either the old or the new
        content. Returns the schema version of the backup before migration.
        """
        if not os.path.isfile(src_path):
            raise StorageError(f"backup {src_path} does not exist")
        try:
            src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open backup {src_path}: {e}")
        try:
            try:
                rows = src.execute("PRAGMA quick_check").fetchall()
                version = migrations.current_version(src)
            except sqlite3.DatabaseError as e:
                raise StorageError(f"backup {src_path} is not a usable database ({e})")
            if rows != [("ok",)]:
                raise StorageError(f"backup {src_path} failed its integrity check: {rows[0][0]}")
            if version > migrations.LATEST:
                raise StorageError(f"backup {src_path} has schema version {version}, newer than "
                                   f"this xmppd supports ({migrations.LATEST})")
            src.backup(self.conn)
        finally:
            src.close()
        # The backup API copied the source's journal mode and version too.
        self.conn.execute("PRAGMA journal_mode=WAL")
        migrations.migrate(self.conn)
        return version

    def close(self):
        self.conn.close()


class _Tx:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._rollback()
        return False

    def _rollback(self):
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled back (e.g. after SQLITE_FULL)

