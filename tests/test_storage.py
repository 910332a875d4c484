"""Storage on real SQLite files: schema versions and migrations, refusing damaged or
foreign databases without touching them, backup/restore and the room commands of xmppdctl.
"""
import hashlib
import json
import os
import sqlite3
import subprocess

import pytest

from conftest import XmppdServer
from test_ctl import ctl
from test_durability import (MUC, MUC_ADMIN, MUC_OWNER, affiliation_list, form, iq, join, login,
                             ok, wait_for)
from test_tap import run_xmppd
from xmppd.config import Config
from xmppd.storage import db_path, migrations, open_database
from xmppd.storage.accounts import AccountStore, hash_password
from xmppd.storage.db import Database, StorageError
from xmppd.storage.rooms import RoomStore

PASSWORD = "correct horse"

# The tables exactly as the stores created them before the schema had a version (v0).
V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS muc_rooms (
    jid     TEXT PRIMARY KEY,
    config  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS muc_affiliations (
    room        TEXT NOT NULL REFERENCES muc_rooms(jid) ON DELETE CASCADE,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    reason      TEXT,
    nick        TEXT,
    data        TEXT,
    PRIMARY KEY (room, jid)
);
"""
OLD_ROOM = "old@conference.localhost"


def make_v0(path):
    """A pre-versioning database with an account and a persistent members-only room."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V0_SCHEMA)
    conn.execute("INSERT INTO accounts VALUES (?, ?, 0)", ("olduser", hash_password(PASSWORD)))
    conn.execute("INSERT INTO muc_rooms VALUES (?, ?)", (OLD_ROOM, json.dumps(
        {"persistent": True, "members_only": True, "name": "Old times"})))
    conn.executemany("INSERT INTO muc_affiliations VALUES (?, ?, ?, ?, ?, ?)", [
        (OLD_ROOM, "olduser@localhost", "owner", None, None, None),
        (OLD_ROOM, "member@localhost", "member", None, "Regular", None),
        (OLD_ROOM, "troll@localhost", "outcast", "old grudge", None, None),
    ])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def version_of(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def tables_of(path):
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(data_dir):
    return XmppdServer(["--c2s-port", "0", "--data-dir", str(data_dir)], data_dir).wait_listening()


# -- migrations -----------------------------------------------------------------

def test_fresh_database_has_the_latest_schema(tmp_path):
    db = open_database(str(tmp_path))
    assert db.migrated_from == 0 and db.version == migrations.LATEST
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    db.close()
    assert {"accounts", "muc_rooms", "muc_affiliations", "offline_messages",
            "admin_requests"} <= tables_of(db_path(str(tmp_path)))
    # Reopening migrates nothing.
    again = open_database(str(tmp_path))
    assert again.migrated_from == migrations.LATEST
    again.close()


def test_migrations_are_numbered_in_order():
    assert [v for v, _, _ in migrations.MIGRATIONS] == list(range(1, migrations.LATEST + 1))


def test_server_starts_on_a_v0_database_and_keeps_its_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    make_v0(str(data / "xmppd.sqlite3"))
    server = start(data)
    try:
        server.wait_for_log(r"migrated .* from schema version 0 to %d" % migrations.LATEST)
        owner = login(server, "olduser")           # the v0 account's password still works
        assert affiliation_list(owner, "outcast", OLD_ROOM) == {"troll@localhost": "old grudge"}
        assert "member@localhost" in affiliation_list(owner, "member", OLD_ROOM)
        assert join(owner, "Olduser", room=OLD_ROOM)[0] == "ok"
        owner.close()
    finally:
        server.stop()
    assert version_of(str(data / "xmppd.sqlite3")) == migrations.LATEST
    store = RoomStore(Database(str(data / "xmppd.sqlite3")), Config(data_dir=str(data)))
    (rec,) = store.load_all()
    assert rec["config"]["name"] == "Old times"
    assert rec["affiliations"]["member@localhost"] == ("member", {"nick": "Regular"})


def test_v1_database_is_migrated_forward_keeping_rows(tmp_path):
    path = str(tmp_path / "xmppd.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.MIGRATIONS[0][2](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO accounts VALUES ('v1user', 'scrypt$x', 1)")
    conn.close()
    db = Database(path)
    assert (db.migrated_from, db.version) == (1, migrations.LATEST)
    assert db.query("SELECT username FROM accounts") == [("v1user",)]
    assert db.query("SELECT COUNT(*) FROM offline_messages") == [(0,)]
    db.close()


def test_failed_migration_step_rolls_back_and_keeps_the_version(tmp_path, monkeypatch):
    path = str(tmp_path / "xmppd.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.MIGRATIONS[0][2](conn)
    conn.execute("PRAGMA user_version = 1")

    def broken(c):
        c.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("simulated failure")
    steps = list(migrations.MIGRATIONS)
    steps[1] = (2, "broken", broken)
    monkeypatch.setattr(migrations, "MIGRATIONS", steps)
    with pytest.raises(sqlite3.OperationalError):
        migrations.migrate(conn)
    assert migrations.current_version(conn) == 1
    assert "half_done" not in tables_of(path)
    conn.close()


# -- databases the server must refuse without touching them -------------------------

def assert_one_line_refusal(data, *needles):
    before = digest(data / "xmppd.sqlite3")
    proc = run_xmppd("--c2s-port", "0", "--data-dir", data)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("xmppd: error: storage:"), lines
    for needle in needles:
        assert needle in lines[0]
    assert digest(data / "xmppd.sqlite3") == before
    return lines[0]


def test_garbage_file_is_refused_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "xmppd.sqlite3").write_bytes(b"this is not an sqlite database\n" * 200)
    assert_one_line_refusal(data, "not a database", "not modified")


def test_corrupt_pages_are_refused_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "xmppd.sqlite3"
    db = Database(str(path))
    accounts = AccountStore(db, Config())
    for i in range(300):
        accounts.create(f"user{i}", None, password_hash="scrypt$" + "x" * 200)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) > 4 * page
    for start in range(page, len(raw), page):       # scribble over every b-tree page header
        raw[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    assert_one_line_refusal(data, "unusable")


def test_database_from_a_newer_xmppd_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(str(data / "xmppd.sqlite3"))
    conn.execute(f"PRAGMA user_version = {migrations.LATEST + 5}")
    conn.close()
    assert_one_line_refusal(data, "newer than this xmppd supports")


def test_database_path_that_is_a_directory_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "xmppd.sqlite3").mkdir(parents=True)
    proc = run_xmppd("--c2s-port", "0", "--data-dir", data)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 78 and len(lines) == 1, lines
    assert lines[0].startswith("xmppd: error: storage:") and "is a directory" in lines[0]


def make_read_only(path):
    """chmod for ordinary users; root ignores modes, so it gets the immutable flag instead."""
    if os.geteuid() != 0:
        path.chmod(0o400)
        return lambda: path.chmod(0o600)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_database_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Database(str(data / "xmppd.sqlite3")).close()
    undo = make_read_only(data / "xmppd.sqlite3")
    try:
        assert_one_line_refusal(data, "not writable")
    finally:
        undo()


def test_second_server_on_the_same_data_dir_is_refused(xmppd_server_factory, tmp_path):
    data = tmp_path / "shared"
    xmppd_server_factory(data_dir=data)
    proc = run_xmppd("--c2s-port", "0", "--data-dir", data)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 78 and "in use by another xmppd" in out, out


def test_database_api_errors_are_storage_errors(tmp_path):
    (tmp_path / "x.sqlite3").write_bytes(b"garbage" * 1000)
    with pytest.raises(StorageError, match="not a database"):
        Database(str(tmp_path / "x.sqlite3"))


# -- xmppdctl: rooms, backup, restore --------------------------------------------------

def make_room(server, owner_name="owner", room="club@conference.localhost"):
    owner = login(server, owner_name)
    assert join(owner, "Boss", room=room)[0] == "ok"
    ok(iq(owner, f"<query xmlns='{MUC_OWNER}'>" + form({
        "muc#roomconfig_persistentroom": "1", "muc#roomconfig_roomname": "Club"},
        MUC + "#roomconfig") + "</query>", to=room))
    ok(set_affiliation_to(owner, room, "spammer@localhost", "outcast", "ads"))
    return owner


def set_affiliation_to(c, room, jid, aff, reason=None):
    r = f"<reason>{reason}</reason>" if reason else ""
    return iq(c, f"<query xmlns='{MUC_ADMIN}'><item jid='{jid}' affiliation='{aff}'>{r}</item>"
                 f"</query>", to=room)


def test_ctl_rooms_info_destroy_while_the_server_runs(xmppd_server):
    data = xmppd_server.data_dir
    owner = make_room(xmppd_server)
    try:
        r = ctl(data, "rooms")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("club@conference.localhost\t'Club'\t")
        assert "outcasts=1" in r.stdout and "owners=1" in r.stdout
        r = ctl(data, "room-info", "club")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["config"]["persistent"] is True
        assert info["affiliations"]["spammer@localhost"] == {"affiliation": "outcast",
                                                             "reason": "ads"}
        assert ctl(data, "room-info", "nosuchroom").returncode == 1

        r = ctl(data, "room-destroy", "club@conference.localhost")
        assert r.returncode == 0, r.stderr
        # The live room goes too: its occupant gets the destroy presence within a second.
        el = wait_for(owner, lambda el: el.get("type") == "unavailable" and
                      el.find(f"{{{MUC}#user}}x/{{{MUC}#user}}destroy") is not None)
        assert el.get("from") == "club@conference.localhost/Boss"
        assert ctl(data, "rooms").stdout == ""
        assert ctl(data, "room-destroy", "club").returncode == 1
    finally:
        owner.close()


def test_online_backup_and_restore(xmppd_server_factory, tmp_path):
    data = tmp_path / "data"
    server = xmppd_server_factory(data_dir=data)
    owner = make_room(server)
    backup = tmp_path / "backup.sqlite3"
    r = ctl(data, "backup", backup)
    assert r.returncode == 0, r.stderr
    # The backup is a complete, checked database on its own.
    db = Database(str(backup))
    assert [r["jid"] for r in RoomStore(db, Config()).load_all()] == ["club@conference.localhost"]
    db.close()
    # Changes after the backup...
    ok(set_affiliation_to(owner, "club@conference.localhost", "late@localhost", "member"))
    # ...restore refuses while the server runs, and leaves the database alone.
    r = ctl(data, "restore", backup)
    assert r.returncode == 1 and "stop it" in r.stderr
    owner.close()
    server.stop()
    assert "late@localhost" in ctl(data, "room-info", "club").stdout
    r = ctl(data, "restore", backup)
    assert r.returncode == 0, r.stderr
    assert "late@localhost" not in ctl(data, "room-info", "club").stdout
    # The restored database serves a server again.
    server = xmppd_server_factory(data_dir=data)
    owner = login(server, "owner")
    assert affiliation_list(owner, "outcast", "club@conference.localhost") == \
        {"spammer@localhost": "ads"}
    owner.close()


def test_restore_refuses_a_bad_backup(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    assert ctl(data, "adduser", "keep", password="pw").returncode == 0
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"nope" * 1000)
    r = ctl(data, "restore", bad)
    assert r.returncode == 1 and "not a usable database" in r.stderr
    r = ctl(data, "restore", tmp_path / "missing.sqlite3")
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert ctl(data, "list").stdout.split() == ["keep@localhost"]


def test_deluser_also_drops_offline_messages(tmp_path):
    from xmppd.storage.offline import OfflineStore
    assert ctl(tmp_path, "adduser", "gone", password="pw").returncode == 0
    db = open_database(str(tmp_path))
    offline = OfflineStore(db, Config())
    assert offline.store("gone", "<message/>", limit=5)
    assert offline.store("other", "<message/>", limit=5)
    assert ctl(tmp_path, "deluser", "gone").returncode == 0
    assert (offline.count("gone"), offline.count("other")) == (0, 1)
    db.close()


def test_offline_store_bound_is_per_account(tmp_path):
    from xmppd.storage.offline import OfflineStore
    db = open_database(str(tmp_path))
    offline = OfflineStore(db, Config())
    assert [offline.store("a", f"<message id='{i}'/>", limit=2) for i in range(3)] == [True, True, False]
    assert offline.store("b", "<message/>", limit=2)
    rows = offline.peek("a")
    assert [r[2] for r in rows] == ["<message id='0'/>", "<message id='1'/>"]
    offline.remove("a", rows[0][0])
    assert [r[2] for r in offline.peek("a")] == ["<message id='1'/>"]
    db.close()
