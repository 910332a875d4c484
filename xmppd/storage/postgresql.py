"""PostgreSQL backend (``storage = "postgresql"``, ``storage_dsn``), with psycopg 3.

:class:`PgDatabase` has the interface of :class:`xmppd.storage.db.Database`
(``execute``, ``query``, ``transaction``, ``close``, ``IntegrityError``,
``version``), so the stores' SQL is written once: it uses ``?``
placeholders and the SQL both dialects share (``INSERT ... ON CONFLICT``,
partial indexes), and :func:`pg_sql` turns ``?`` into psycopg's ``%s``.
Only the schema differs (``BIGSERIAL`` for ``INTEGER PRIMARY KEY
AUTOINCREMENT``, ``DOUBLE PRECISION`` for ``REAL``, which is 4 bytes in
PostgreSQL), so each backend declares its own migrations, with the same
numbers and descriptions: :data:`MIGRATIONS` here mirrors
``xmppd.storage.migrations.MIGRATIONS`` step for step (a test checks it).

As with SQLite, the server reads on one connection (the reactor's; a
loopback round trip is ~0.1 ms) and writes on the writer thread's own
connection (:class:`xmppd.storage.writer.Writer`), one transaction per
write, acknowledged after the commit. Several xmppd processes (a c2s node
and ``xmppd-muc`` nodes) may share one database; migrations take an
advisory lock so only one of them migrates. A connection that broke (the
server restarted) is reopened on the next call; the call that hit the
break fails (its client gets an error, nothing is acknowledged).
"""
import functools

from xmppd.storage.db import StorageError

ADVISORY_LOCK = 0x786D7070   # "xmpp": serialises migrations of processes sharing a database


@functools.lru_cache(maxsize=512)
def pg_sql(sql):
    """SQLite-style ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise StorageError("storage = 'postgresql' needs psycopg 3: pip install 'psycopg[binary]'")
    return psycopg


# -- schema -------------------------------------------------------------------
# (version, description, statements); same numbers and descriptions as the SQLite list.

MIGRATIONS = [
    (1, "accounts, persistent rooms, affiliations", [
        """CREATE TABLE IF NOT EXISTS accounts (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS muc_rooms (
            jid TEXT PRIMARY KEY,
            config TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS muc_affiliations (
            room TEXT NOT NULL REFERENCES muc_rooms(jid) ON DELETE CASCADE,
            jid TEXT NOT NULL,
            affiliation TEXT NOT NULL,
            reason TEXT,
            nick TEXT,
            data TEXT,
            PRIMARY KEY (room, jid))""",
    ]),
    (2, "offline messages", [
        """CREATE TABLE offline_messages (
            id BIGSERIAL PRIMARY KEY,
            username TEXT NOT NULL,
            stamp DOUBLE PRECISION NOT NULL,
            stanza TEXT NOT NULL)""",
        "CREATE INDEX offline_messages_user ON offline_messages (username, id)",
    ]),
    (3, "index on reserved nicks", [
        "CREATE INDEX IF NOT EXISTS muc_affiliations_nick "
        "ON muc_affiliations (room, nick) WHERE nick IS NOT NULL",
    ]),
    (4, "admin requests queue", [
        """CREATE TABLE admin_requests (
            id BIGSERIAL PRIMARY KEY,
            command TEXT NOT NULL,
            arg TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL)""",
    ]),
    (5, "blocklist", [
        """CREATE TABLE blocklist (
            username TEXT NOT NULL,
            jid TEXT NOT NULL,
            PRIMARY KEY (username, jid))""",
    ]),
    (6, "SCRAM credentials for accounts", [
        f"ALTER TABLE accounts ADD COLUMN {column}"
        for column in ("scram_salt BYTEA", "scram_iterations INTEGER",
                       "sha1_stored_key BYTEA", "sha1_server_key BYTEA",
                       "sha256_stored_key BYTEA", "sha256_server_key BYTEA")
    ]),
    (7, "server settings (message of the day)", [
        """CREATE TABLE server_settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL)""",
    ]),
    (8, "personal data: PEP, vCards, private XML", [
        """CREATE TABLE pep_nodes (
            username TEXT NOT NULL,
            node TEXT NOT NULL,
            config TEXT NOT NULL,
            PRIMARY KEY (username, node))""",
        """CREATE TABLE pep_items (
            id BIGSERIAL PRIMARY KEY,
            username TEXT NOT NULL,
            node TEXT NOT NULL,
            item_id TEXT NOT NULL,
            publisher TEXT NOT NULL,
            payload TEXT NOT NULL,
            UNIQUE (username, node, item_id))""",
        "CREATE INDEX pep_items_node ON pep_items (username, node, id)",
        """CREATE TABLE pep_subscriptions (
            username TEXT NOT NULL,
            node TEXT NOT NULL,
            jid TEXT NOT NULL,
            PRIMARY KEY (username, node, jid))""",
        "CREATE INDEX pep_subscriptions_jid ON pep_subscriptions (jid)",
        """CREATE TABLE vcards (
            username TEXT PRIMARY KEY,
            vcard TEXT NOT NULL)""",
        """CREATE TABLE private_xml (
            username TEXT NOT NULL,
            namespace TEXT NOT NULL,
            xml TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (username, namespace))""",
    ]),
    (9, "message archives", [
        """CREATE TABLE archive (
            id BIGSERIAL PRIMARY KEY,
            owner TEXT NOT NULL,
            sid TEXT NOT NULL,
            stamp DOUBLE PRECISION NOT NULL,
            with_bare TEXT NOT NULL,
            with_full TEXT NOT NULL,
            stanza TEXT NOT NULL)""",
        "CREATE UNIQUE INDEX archive_sid ON archive (sid)",
        "CREATE INDEX archive_owner ON archive (owner, id)",
        "CREATE INDEX archive_owner_with ON archive (owner, with_bare, id)",
        "CREATE INDEX archive_owner_stamp ON archive (owner, stamp)",
        "CREATE INDEX archive_stamp ON archive (stamp)",
        """CREATE TABLE archive_prefs (
            owner TEXT PRIMARY KEY,
            prefs TEXT NOT NULL)""",
    ]),
    (10, "archive: no (owner, stamp) index", [
        "DROP INDEX IF EXISTS archive_owner_stamp",
    ]),
    (11, "push notification registrations", [
        """CREATE TABLE push_registrations (
            username TEXT NOT NULL,
            jid TEXT NOT NULL,
            node TEXT NOT NULL,
            options TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (username, jid, node))""",
    ]),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn):
    row = conn.execute("SELECT to_regclass('xmppd_schema')").fetchone()
    if row[0] is None:
        return 0
    row = conn.execute("SELECT version FROM xmppd_schema").fetchone()
    return row[0] if row else 0


def migrate(conn):
    """Apply the missing steps, each with its version bump in one transaction; return the old version."""
    from xmppd.storage.migrations import SchemaError
    start = current_version(conn)
    if start > LATEST:
        raise SchemaError(f"database schema version {start} is newer than this xmppd "
                          f"supports ({LATEST}); refusing to touch it")
    for version, _description, statements in MIGRATIONS:
        if version <= start:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS xmppd_schema (version INTEGER NOT NULL)")
            if current_version(conn) >= version:
                continue          # another process migrated while we waited for the lock
            for sql in statements:
                conn.execute(sql)
            conn.execute("DELETE FROM xmppd_schema")
            conn.execute("INSERT INTO xmppd_schema (version) VALUES (%s)", (version,))
    return start


# -- connection ---------------------------------------------------------------------

class _Tx:
    """``with db.transaction() as conn``: ``conn.execute``/``executemany`` with ``?`` SQL."""

    def __init__(self, db):
        self.db = db
        self.tx = None

    def __enter__(self):
        self.tx = self.db._connection().transaction()
        self.tx.__enter__()
        return self

    def __exit__(self, *exc):
        return self.tx.__exit__(*exc)

    def execute(self, sql, args=()):
        cur = self.db.conn.cursor()
        cur.execute(pg_sql(sql), args)
        return cur

    def executemany(self, sql, rows):
        cur = self.db.conn.cursor()
        cur.executemany(pg_sql(sql), rows)
        return cur


class PgDatabase:
    """A checked, migrated PostgreSQL connection (autocommit; used by one thread at a time)."""

    backend = "postgresql"

    def __init__(self, dsn, check=True):
        psycopg = _psycopg()
        self.IntegrityError = psycopg.IntegrityError
        self._psycopg = psycopg
        self.dsn = dsn
        self.conn = None
        self._connect()
        info = self.conn.info
        # never the DSN itself: it may hold a password
        self.path = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
        try:
            self.migrated_from = migrate(self.conn) if check else current_version(self.conn)
            self.version = current_version(self.conn)
        except psycopg.Error as e:
            self.conn.close()
            raise StorageError(f"{self.path}: cannot prepare the schema: {e}")
        except Exception as e:
            self.conn.close()
            raise StorageError(f"{self.path}: {e}")

    def _connect(self):
        try:
            self.conn = self._psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as e:
            detail = " ".join(str(e).split())           # one line for the operator
            raise StorageError(f"cannot connect to PostgreSQL: {detail}")
        except Exception as e:       # e.g. a malformed DSN
            raise StorageError(f"cannot connect to PostgreSQL: invalid storage_dsn ({type(e).__name__})")

    def _connection(self):
        if self.conn.closed or self.conn.broken:
            self._connect()
        return self.conn

    def execute(self, sql, args=()):
        """One statement in its own transaction (autocommit): committed when it returns."""
        cur = self._connection().cursor()
        cur.execute(pg_sql(sql), args)
        return cur

    def query(self, sql, args=()):
        cur = self._connection().cursor()
        cur.execute(pg_sql(sql), args)
        return cur.fetchall()

    def transaction(self):
        return _Tx(self)

    def data_version(self):
        """No cheap change counter as SQLite's: callers just query."""
        return None

    def tables(self):
        return [r[0] for r in self.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename <> 'xmppd_schema'")]

    def backup(self, dest_path):
        raise StorageError("backup: see `xmppdctl backup` (copies PostgreSQL to an SQLite file)")

    def close(self):
        if self.conn is not None:
            self.conn.close()
