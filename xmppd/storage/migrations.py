"""The SQLite schema as an ordered list of forward migrations.

The database's ``PRAGMA user_version`` is the number of migrations applied.
:func:`migrate` applies the missing ones in order, each in its own
``BEGIN IMMEDIATE`` transaction together with the version bump, so a crash
or a second process (``xmppdctl`` while the server runs) never sees half a
step. Migrations are append-only: never edit a released step, add a new one.

Version 0 is a database created before the schema was versioned (the
stores issued ``CREATE TABLE IF NOT EXISTS`` themselves); step 1 creates
the same tables with ``IF NOT EXISTS`` so such files are adopted as they are.
"""
import sqlite3


class SchemaError(Exception):
    """The database cannot be used by this version of xmppd (e.g. it is newer)."""


def _v1_initial(conn):
    """Accounts, persistent rooms and their affiliations (reason, reserved nick)."""
    conn.execute("""
        CREATE TABLE IF NOT EXISTS accounts (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            created REAL NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE IF NOT EXISTS muc_rooms (
            jid     TEXT PRIMARY KEY,
            config  TEXT NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE IF NOT EXISTS muc_affiliations (
            room        TEXT NOT NULL REFERENCES muc_rooms(jid) ON DELETE CASCADE,
            jid         TEXT NOT NULL,
            affiliation TEXT NOT NULL,
            reason      TEXT,
            nick        TEXT,
            data        TEXT,
            PRIMARY KEY (room, jid)
        )""")


def _v2_offline(conn):
    """Offline messages (XEP-0160): serialised stanza per account, in arrival order."""
    conn.execute("""
        CREATE TABLE offline_messages (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            username TEXT NOT NULL,
            stamp    REAL NOT NULL,
            stanza   TEXT NOT NULL
        )""")
    conn.execute("CREATE INDEX offline_messages_user ON offline_messages (username, id)")


def _v3_reserved_nick_index(conn):
    """Reserved nicks are looked up by (room, nick) when someone joins."""
    conn.execute("CREATE INDEX IF NOT EXISTS muc_affiliations_nick "
                 "ON muc_affiliations (room, nick) WHERE nick IS NOT NULL")


def _v4_admin_requests(conn):
    """Requests from ``xmppdctl`` to the running server (e.g. destroy a live room)."""
    conn.execute("""
        CREATE TABLE admin_requests (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            command  TEXT NOT NULL,
            arg      TEXT NOT NULL,
            created  REAL NOT NULL
        )""")


def _v5_blocklist(conn):
    """Blocked JIDs per account (XEP-0191), one row per (account, normalised JID)."""
    conn.execute("""
        CREATE TABLE blocklist (
            username TEXT NOT NULL,
            jid      TEXT NOT NULL,
            PRIMARY KEY (username, jid)
        )""")


def _v6_scram(conn):
    """SCRAM credentials per account (RFC 5802): salt, iteration count, StoredKey and
    ServerKey for SHA-1 and SHA-256. Accounts from earlier versions keep their scrypt
    ``password_hash`` (these columns NULL) until their next PLAIN login upgrades them;
    an account with SCRAM keys has an empty ``password_hash``."""
    for column in ("scram_salt BLOB", "scram_iterations INTEGER",
                   "sha1_stored_key BLOB", "sha1_server_key BLOB",
                   "sha256_stored_key BLOB", "sha256_server_key BLOB"):
        conn.execute(f"ALTER TABLE accounts ADD COLUMN {column}")


def _v7_server_settings(conn):
    """Server-wide settings changed at runtime, e.g. the message of the day (XEP-0133)."""
    conn.execute("""
        CREATE TABLE server_settings (
            name   TEXT PRIMARY KEY,
            value  TEXT NOT NULL
        )""")


def _v8_personal_data(conn):
    """Per-account personal data: PEP nodes and items (XEP-0163), vCards, private XML (XEP-0049)."""
    conn.execute("""
        CREATE TABLE pep_nodes (
            username TEXT NOT NULL,
            node     TEXT NOT NULL,
            config   TEXT NOT NULL,
            PRIMARY KEY (username, node)
        )""")
    conn.execute("""
        CREATE TABLE pep_items (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            username  TEXT NOT NULL,
            node      TEXT NOT NULL,
            item_id   TEXT NOT NULL,
            publisher TEXT NOT NULL,
            payload   TEXT NOT NULL,
            UNIQUE (username, node, item_id)
        )""")
    conn.execute("CREATE INDEX pep_items_node ON pep_items (username, node, id)")
    conn.execute("""
        CREATE TABLE pep_subscriptions (
            username TEXT NOT NULL,
            node     TEXT NOT NULL,
            jid      TEXT NOT NULL,
            PRIMARY KEY (username, node, jid)
        )""")
    conn.execute("CREATE INDEX pep_subscriptions_jid ON pep_subscriptions (jid)")
    conn.execute("""
        CREATE TABLE vcards (
            username TEXT PRIMARY KEY,
            vcard    TEXT NOT NULL
        )""")
    conn.execute("""
        CREATE TABLE private_xml (
            username  TEXT NOT NULL,
            namespace TEXT NOT NULL,
            xml       TEXT NOT NULL,
            size      INTEGER NOT NULL,
            PRIMARY KEY (username, namespace)
        )""")


def _v9_archive(conn):
    """Message archives (XEP-0313) of accounts and rooms, and archiving preferences.

    Paging is by ``id`` (arrival order) within an owner: the ``(owner)``
    index holds rowids in order, so a page after a known UID is a range
    scan; ``(owner, stamp)`` turns a start/end time into an id bound;
    ``(stamp)`` serves retention; ``sid`` (the stanza-id / MAM UID) is
    unique and random.
    """
    conn.execute("""
        CREATE TABLE archive (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            owner     TEXT NOT NULL,
            sid       TEXT NOT NULL,
            stamp     REAL NOT NULL,
            with_bare TEXT NOT NULL,
            with_full TEXT NOT NULL,
            stanza    TEXT NOT NULL
        )""")
    conn.execute("CREATE UNIQUE INDEX archive_sid ON archive (sid)")
    conn.execute("CREATE INDEX archive_owner ON archive (owner)")
    conn.execute("CREATE INDEX archive_owner_with ON archive (owner, with_bare)")
    conn.execute("CREATE INDEX archive_owner_stamp ON archive (owner, stamp)")
    conn.execute("CREATE INDEX archive_stamp ON archive (stamp)")
    conn.execute("""
        CREATE TABLE archive_prefs (
            owner TEXT PRIMARY KEY,
            prefs TEXT NOT NULL
        )""")


def _v10_archive_indexes(conn):
    """Drop ``archive_owner_stamp``: every archived row paid for it, and queries do not need it.

    A start/end time becomes an id bound through the global ``(stamp)``
    index (rows are appended in arrival order, so ids grow with stamps
    across all archives, not only within one). The ``(owner)`` index stays:
    it holds each archive's rowids in order, so a page is a range scan
    (without it, SQLite sorts every row of the archive for each page).
    """
    conn.execute("DROP INDEX IF EXISTS archive_owner_stamp")


def _v11_push(conn):
    """XEP-0357 push registrations: per account, one row per (App Server JID, node);
    ``options`` is the publish-options form as JSON."""
    conn.execute("""
        CREATE TABLE push_registrations (
            username TEXT NOT NULL,
            jid      TEXT NOT NULL,
            node     TEXT NOT NULL,
            options  TEXT NOT NULL,
            created  REAL NOT NULL,
            PRIMARY KEY (username, jid, node)
        )""")


# (version, description, step(conn)); version == position + 1.
MIGRATIONS = [
    (1, "accounts, persistent rooms, affiliations", _v1_initial),
    (2, "offline messages", _v2_offline),
    (3, "index on reserved nicks", _v3_reserved_nick_index),
    (4, "admin requests queue", _v4_admin_requests),
    (5, "blocklist", _v5_blocklist),
    (6, "SCRAM credentials for accounts", _v6_scram),
    (7, "server settings (message of the day)", _v7_server_settings),
    (8, "personal data: PEP, vCards, private XML", _v8_personal_data),
    (9, "message archives", _v9_archive),
    (10, "archive: no (owner, stamp) index", _v10_archive_indexes),
    (11, "push notification registrations", _v11_push),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn):
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn, log=None):
    """Bring the schema of ``conn`` (autocommit mode) up to :data:`LATEST`; return the old version.

    Raises :class:`SchemaError` for a database written by a newer xmppd
    (we never downgrade or touch it).
    """
    start = current_version(conn)
    if start > LATEST:
        raise SchemaError(f"database schema version {start} is newer than this xmppd "
                          f"supports ({LATEST}); refusing to touch it")
    for version, description, step in MIGRATIONS:
        if version <= start:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if current_version(conn) >= version:
                conn.execute("ROLLBACK")
                continue
            step(conn)
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        if log is not None:
            log(version, description)
    return start
