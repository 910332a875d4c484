"""The storage interface on both backends (SQLite file, private PostgreSQL): the same
store code and SQL must behave the same, schema migrations are declared for both
and stay in step, xmppdctl works on both, and an SQLite database moves to
PostgreSQL with every row.
"""
import json

import pytest

from pgserver import backend, pg_cluster, pg_dsn  # noqa: F401 (fixtures)
from test_ctl import ctl
from xmppd.config import Config
from xmppd.storage import enqueue_request, migrations, open_database
from xmppd.storage import postgresql as pgmod
from xmppd.storage.accounts import AccountError, AccountStore
from xmppd.storage.db import StorageError
from xmppd.storage.offline import OfflineStore
from xmppd.storage.rooms import RoomStore

ROOM = "club@conference.localhost"


@pytest.fixture
def db(backend, tmp_path):
    d = backend.open(tmp_path)
    yield d
    d.close()


def test_schema_is_at_the_latest_version(db):
    assert db.version == migrations.LATEST
    assert {"accounts", "muc_rooms", "muc_affiliations", "offline_messages",
            "admin_requests"} <= set(db.tables())


def test_postgresql_migrations_mirror_sqlite_step_for_step():
    """A migration added for SQLite needs its PostgreSQL twin (same number and description)."""
    sqlite_steps = [(v, d) for v, d, _ in migrations.MIGRATIONS]
    pg_steps = [(v, d) for v, d, _ in pgmod.MIGRATIONS]
    assert pg_steps == sqlite_steps, "add the PostgreSQL migration to xmppd/storage/postgresql.py"


def test_accounts(db):
    cfg = Config()
    acc = AccountStore(db, cfg)
    assert acc.create("Alice", "pw one") == "alice"
    with pytest.raises(AccountError, match="already exists"):
        acc.create("alice", "other")
    assert acc.exists("alice") and not acc.exists("bob")
    assert acc.check("alice", "pw one") and not acc.check("alice", "nope")
    acc.passwd("alice", "pw two")
    assert acc.check("alice", "pw two")
    acc.create("bob", "x")
    assert acc.list() == ["alice", "bob"]
    acc.delete("bob")
    with pytest.raises(AccountError, match="no account"):
        acc.delete("bob")
    with pytest.raises(AccountError, match="no account"):
        acc.passwd("bob", "x")
    assert acc.list() == ["alice"]


def test_rooms_round_trip_and_replace(db):
    rooms = RoomStore(db, Config())
    config = {"persistent": True, "name": "Club ' \"%s? &", "public": True, "members_only": False}
    affs = {"a@localhost": "owner", "b@localhost": "member", "c@localhost": "outcast"}
    data = {"b@localhost": {"nick": "Bee"}, "c@localhost": {"reason": "spam", "x": 1}}
    rooms.save_room(ROOM, config, affs, data)
    assert rooms.has_room(ROOM)
    (rec,) = rooms.load_all()
    assert rec["config"] == config
    assert rec["affiliations"] == {"a@localhost": ("owner", {}), "b@localhost": ("member", {"nick": "Bee"}),
                                   "c@localhost": ("outcast", {"reason": "spam", "x": 1})}
    assert rooms.public_rooms() == [(ROOM, config["name"])]
    rooms.save_room(ROOM, dict(config, public=False), {"a@localhost": "owner"}, {})
    (rec,) = rooms.load_all()
    assert rec["affiliations"] == {"a@localhost": ("owner", {})} and not rooms.public_rooms()
    rooms.delete_room(ROOM)
    assert rooms.load_all() == [] and not rooms.has_room(ROOM)


def test_offline_bound_order_and_removal(db):
    off = OfflineStore(db, Config())
    for i in range(3):
        assert off.store("alice", f"<message><body>{i} %s ?</body></message>", 3, stamp=1000.5 + i)
    assert not off.store("alice", "<message/>", 3)           # the bound holds
    assert off.store("bob", "<message/>", 3)                 # per account
    rows = off.peek("alice")
    assert [r[2] for r in rows] == [f"<message><body>{i} %s ?</body></message>" for i in range(3)]
    assert rows[0][1] == 1000.5                               # full-precision stamps
    off.remove("alice", rows[1][0])
    assert [r[0] for r in off.peek("alice")] == [rows[2][0]]
    assert off.count("alice") == 1
    off.delete_account("alice")
    assert off.count("alice") == 0 and off.count("bob") == 1


def test_transaction_rolls_back_on_error(db):
    with pytest.raises(ZeroDivisionError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO muc_rooms (jid, config) VALUES (?, ?)", ("x@c", "{}"))
            1 / 0
    assert db.query("SELECT COUNT(*) FROM muc_rooms")[0][0] == 0


def test_admin_requests_queue(db):
    enqueue_request(db, "room-destroy", ROOM)
    enqueue_request(db, "room-destroy", "other@c")
    rows = db.query("SELECT id, command, arg FROM admin_requests ORDER BY id")
    assert [r[2] for r in rows] == [ROOM, "other@c"] and rows[0][0] < rows[1][0]


def test_reopening_does_not_migrate_again(backend, tmp_path):
    first = backend.open(tmp_path)
    first.close()
    again = backend.open(tmp_path)
    try:
        assert again.migrated_from == again.version == migrations.LATEST
    finally:
        again.close()


def test_postgresql_database_from_a_newer_xmppd_is_refused(pg_dsn):
    db = pgmod.PgDatabase(pg_dsn)
    db.execute("UPDATE xmppd_schema SET version = ?", (pgmod.LATEST + 1,))
    db.close()
    with pytest.raises(StorageError, match="newer than this xmppd"):
        pgmod.PgDatabase(pg_dsn)


def test_unreachable_postgresql_is_one_line_without_the_password(pg_cluster):
    dsn = "host=127.0.0.1 port=1 user=xmppd password=hunter2-secret dbname=x connect_timeout=2"
    with pytest.raises(StorageError) as e:
        pgmod.PgDatabase(dsn)
    assert "hunter2" not in str(e.value) and "\n" not in str(e.value).strip()
    with pytest.raises(StorageError, match="invalid storage_dsn|cannot connect"):
        pgmod.PgDatabase("this is = not a dsn ' at all")


def test_broken_connection_is_reopened(pg_cluster, pg_dsn):
    import psycopg
    db = pgmod.PgDatabase(pg_dsn)
    pid = db.query("SELECT pg_backend_pid()")[0][0]
    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        db.query("SELECT 1")                       # the call that hits the break fails...
    assert db.query("SELECT 1") == [(1,)]          # ...the next one has a new connection
    db.close()


# -- xmppdctl ------------------------------------------------------------------------

def _ctl(backend, tmp_path, *args, password=None):
    extra = []
    if backend.name == "postgresql":
        path = tmp_path / "ctl.toml"
        path.write_text(backend.config)
        extra = ["--config", str(path)]
    return ctl(tmp_path, *extra, *args, password=password)


def test_ctl_accounts_and_rooms(backend, tmp_path):
    assert _ctl(backend, tmp_path, "adduser", "alice", password="pw").returncode == 0
    r = _ctl(backend, tmp_path, "adduser", "alice", password="pw")
    assert r.returncode == 1 and "already exists" in r.stderr
    assert _ctl(backend, tmp_path, "list").stdout.split() == ["alice@localhost"]
    db = backend.open(tmp_path)
    try:
        RoomStore(db, Config()).save_room(ROOM, {"persistent": True, "name": "Club"},
                                          {"alice@localhost": "owner"}, {})
        OfflineStore(db, Config()).store("alice", "<message/>", 10)
    finally:
        db.close()
    assert ROOM in _ctl(backend, tmp_path, "rooms").stdout
    assert "alice@localhost" in _ctl(backend, tmp_path, "room-info", ROOM).stdout
    assert _ctl(backend, tmp_path, "deluser", "alice").returncode == 0
    db = backend.open(tmp_path)
    try:
        assert OfflineStore(db, Config()).count("alice") == 0     # deleted with the account
    finally:
        db.close()
    assert _ctl(backend, tmp_path, "room-destroy", ROOM).returncode == 0
    assert ROOM not in _ctl(backend, tmp_path, "rooms").stdout


def test_postgresql_backup_and_restore(pg_dsn, tmp_path):
    from pgserver import Backend
    be = Backend("postgresql", pg_dsn)
    assert _ctl(be, tmp_path, "adduser", "alice", password="pw").returncode == 0
    db = be.open(tmp_path)
    RoomStore(db, Config()).save_room(ROOM, {"persistent": True}, {"alice@localhost": "owner"},
                                      {"alice@localhost": {"nick": "Al"}})
    OfflineStore(db, Config()).store("alice", "<message><body>kept</body></message>", 10)
    backup = tmp_path / "backup.sqlite3"
    r = _ctl(be, tmp_path, "backup", str(backup))
    assert r.returncode == 0, r.stderr
    # damage, then restore
    AccountStore(db, Config()).delete("alice")
    RoomStore(db, Config()).delete_room(ROOM)
    AccountStore(db, Config()).create("intruder", "x")
    r = _ctl(be, tmp_path, "restore", str(backup))
    assert r.returncode == 0, r.stderr
    assert AccountStore(db, Config()).list() == ["alice"]
    (rec,) = RoomStore(db, Config()).load_all()
    assert rec["affiliations"] == {"alice@localhost": ("owner", {"nick": "Al"})}
    assert [r[2] for r in OfflineStore(db, Config()).peek("alice")] == \
        ["<message><body>kept</body></message>"]
    # ids go on after the restored ones
    OfflineStore(db, Config()).store("alice", "<message/>", 10)
    ids = [r[0] for r in OfflineStore(db, Config()).peek("alice")]
    assert ids == sorted(ids) and len(set(ids)) == 2
    db.close()


def test_migrate_storage_copies_sqlite_into_postgresql(pg_dsn, tmp_path):
    sdb = open_database(str(tmp_path))
    acc = AccountStore(sdb, Config())
    acc.create("alice", "pw")
    acc.create("bob", "pw")
    RoomStore(sdb, Config()).save_room(ROOM, {"persistent": True, "name": "Club"},
                                       {"alice@localhost": "owner", "bob@localhost": "member"},
                                       {"bob@localhost": {"nick": "B", "reason": "friend"}})
    for i in range(5):
        OfflineStore(sdb, Config()).store("bob", f"<message><body>{i}</body></message>", 10)
    sdb.close()
    r = ctl(tmp_path, "migrate-storage", "--to", "postgresql", "--dsn", pg_dsn)
    assert r.returncode == 0, r.stderr
    assert "accounts 2" in r.stdout and "offline_messages 5" in r.stdout
    assert "password" not in r.stdout
    pdb = pgmod.PgDatabase(pg_dsn)
    try:
        acc = AccountStore(pdb, Config())
        assert acc.list() == ["alice", "bob"] and acc.check("bob", "pw")
        (rec,) = RoomStore(pdb, Config()).load_all()
        assert rec["config"] == {"persistent": True, "name": "Club"}
        assert rec["affiliations"]["bob@localhost"] == ("member", {"nick": "B", "reason": "friend"})
        assert [r[2] for r in OfflineStore(pdb, Config()).peek("bob")] == \
            [f"<message><body>{i}</body></message>" for i in range(5)]
    finally:
        pdb.close()
    # a second run refuses: the target is not empty
    r = ctl(tmp_path, "migrate-storage", "--to", "postgresql", "--dsn", pg_dsn)
    assert r.returncode == 1 and "not empty" in r.stderr


def test_config_requires_a_dsn_for_postgresql(tmp_path):
    from xmppd import config
    from xmppd.config import ConfigError
    p = tmp_path / "c.toml"
    p.write_text('storage = "postgresql"\n')
    with pytest.raises(ConfigError, match="storage_dsn"):
        config.load(str(p))
    p.write_text('storage = "mysql"\n')
    with pytest.raises(ConfigError, match="'sqlite' or 'postgresql'"):
        config.load(str(p))


def test_json_config_survives_unicode_on_both(db):
    rooms = RoomStore(db, Config())
    config = {"persistent": True, "name": "Zimmer \u00e4\u00f6\u00fc \U0001F600", "lang": "de"}
    rooms.save_room(ROOM, config, {}, {})
    assert rooms.load_all()[0]["config"] == config
    assert json.loads(db.query("SELECT config FROM muc_rooms")[0][0]) == config


def test_blocklist(db):
    from xmppd.storage.blocklist import BlocklistStore
    bl = BlocklistStore(db, Config())
    assert bl.load_all() == {}
    bl.add("alice", ["bob@localhost", "x.example"])
    bl.add("alice", ["bob@localhost"])            # again: no duplicate, no error
    bl.add("carol", ["dave@localhost/r"])
    assert bl.load_all() == {"alice": {"bob@localhost", "x.example"}, "carol": {"dave@localhost/r"}}
    bl.remove("alice", ["x.example", "never@listed"])
    assert bl.get("alice") == {"bob@localhost"}
    bl.delete_account("alice")
    assert bl.load_all() == {"carol": {"dave@localhost/r"}}
    bl.remove("carol")
    assert bl.load_all() == {}
def test_push_registrations(db):
    """XEP-0357 registrations: upsert by (jid, node), eviction in the same write, removal."""
    from xmppd.storage.push import PushStore
    ps = PushStore(db, Config())
    assert ps.load_all() == {}
    ps.put("alice", "push.localhost", "n1", "[]", 1.0)
    ps.put("alice", "push.localhost", "n2", '[["secret", ["s\u00e9"]]]', 2.0)
    ps.put("alice", "push.localhost", "n1", '[["k", ["v"]]]', 3.0)        # replaces, no duplicate
    ps.put("bob", "bot@localhost/r", "n", "[]", 4.0)
    assert ps.get("alice") == [("push.localhost", "n2", '[["secret", ["s\u00e9"]]]', 2.0),
                               ("push.localhost", "n1", '[["k", ["v"]]]', 3.0)]
    ps.put("alice", "push.localhost", "n3", "[]", 5.0, evict=[("push.localhost", "n2")])
    assert [r[1] for r in ps.get("alice")] == ["n1", "n3"]
    ps.remove("alice", "push.localhost", "n1")
    assert [r[1] for r in ps.get("alice")] == ["n3"]
    ps.remove("alice", "push.localhost")
    assert ps.load_all() == {"bob": [("bot@localhost/r", "n", "[]", 4.0)]}
    ps.delete_account("bob")
    assert ps.load_all() == {}


def test_message_archive_pages_purges_and_prefs(db):
    """XEP-0313 archive rows: paging by id both ways, unknown ids, purge, prefs (issue 12)."""
    from xmppd.services.mam import Query
    from xmppd.storage.archive import ArchiveNotFound, ArchiveStore
    store = ArchiveStore(db)
    rows = [("a@localhost", f"s{i}", 1000.0 + i, "b@localhost", "b@localhost/r",
             f"<message><body>{i}</body></message>") for i in range(7)]
    store.append_many(rows)
    store.append_many([rows[0]])                 # the same stanza-id again: ignored
    store.append_many([("c@localhost", "t0", 1000.0, "a@localhost", "a@localhost/r", "<m/>")])
    assert store.count("a@localhost") == 7

    q = Query()
    q.max = 3
    page, complete, count = store.find("a@localhost", q)
    assert [r[0] for r in page] == ["s0", "s1", "s2"] and not complete and count is None
    q.rsm_after = "s5"
    page, complete, _ = store.find("a@localhost", q)
    assert [r[0] for r in page] == ["s6"] and complete
    q = Query()
    q.max, q.rsm_before = 3, ""
    assert [r[0] for r in store.find("a@localhost", q)[0]] == ["s4", "s5", "s6"]
    q = Query()
    q.max, q.start, q.end = 10, 1002.0, 1004.5
    assert [r[0] for r in store.find("a@localhost", q)[0]] == ["s2", "s3", "s4"]
    q = Query()
    q.max = 0
    assert store.find("a@localhost", q) == ([], False, 7)
    q = Query()
    q.rsm_after = "t0"                           # another archive's id is unknown here
    with pytest.raises(ArchiveNotFound):
        store.find("a@localhost", q)

    assert store.last("a@localhost", 2)[1][0] == "s6"
    assert store.replace("a@localhost", "s3", "<message><retracted/></message>")
    assert not store.replace("c@localhost", "s3", "<x/>")
    assert store.purge("a@localhost", 1002.0) == 2
    assert store.purge(None, 1003.5) == 3         # s2, s3 of a; t0 of c
    assert store.count("a@localhost") == 3 and store.count("c@localhost") == 0

    assert store.get_prefs("a@localhost") is None
    prefs = {"default": "roster", "always": ["b@localhost"], "never": []}
    store.set_prefs("a@localhost", prefs)
    store.set_prefs("a@localhost", dict(prefs, default="never"))
    assert store.get_prefs("a@localhost")["default"] == "never"
    assert store.delete_archive("a@localhost") == 3
    assert store.get_prefs("a@localhost") is None
