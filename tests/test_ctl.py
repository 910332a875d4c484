"""xmppdctl and the account store: salted hashes, never plain text."""
import sqlite3
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, server_env
from xmppd.config import Config
from xmppd.storage.accounts import AccountError, AccountStore, hash_password, verify_password
from xmppd.storage.db import Database


def ctl(data_dir, *args, password=None):
    return subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data_dir), *args],
                          input=(password + "\n") if password is not None else "",
                          capture_output=True, text=True, cwd=REPO_ROOT, env=server_env())


def store(data_dir):
    return AccountStore(Database(str(data_dir / "xmppd.sqlite3")), Config(data_dir=str(data_dir)))


def test_adduser_list_passwd_deluser(tmp_path):
    r = ctl(tmp_path, "adduser", "Alice", password="s3cret pass")
    assert r.returncode == 0, r.stderr
    assert ctl(tmp_path, "adduser", "bob@localhost", password="pw2").returncode == 0
    r = ctl(tmp_path, "list")
    assert r.stdout.split() == ["alice@localhost", "bob@localhost"]
    accounts = store(tmp_path)
    assert accounts.check("alice", "s3cret pass")
    assert not accounts.check("alice", "wrong")
    assert not accounts.check("nobody", "s3cret pass")
    assert ctl(tmp_path, "passwd", "alice", password="new pass").returncode == 0
    assert accounts.check("alice", "new pass") and not accounts.check("alice", "s3cret pass")
    assert ctl(tmp_path, "deluser", "alice").returncode == 0
    assert ctl(tmp_path, "list").stdout.split() == ["bob@localhost"]


def test_errors_are_reported_with_nonzero_exit(tmp_path):
    assert ctl(tmp_path, "adduser", "carol", password="pw").returncode == 0
    r = ctl(tmp_path, "adduser", "carol", password="pw")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = ctl(tmp_path, "deluser", "nobody")
    assert r.returncode == 1 and "no account" in r.stderr
    r = ctl(tmp_path, "passwd", "nobody", password="x")
    assert r.returncode == 1
    r = ctl(tmp_path, "adduser", "bad user", password="x")
    assert r.returncode == 1 and "invalid username" in r.stderr
    r = ctl(tmp_path, "adduser", "dave@example.org", password="x")
    assert r.returncode == 1 and "not an account of localhost" in r.stderr
    r = ctl(tmp_path, "adduser", "erin", password="")
    assert r.returncode == 1 and "empty" in r.stderr
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("no_such_key = 1\n")
    r = ctl(tmp_path, "--config", str(bad_cfg), "list")
    assert r.returncode == 1 and "no_such_key" in r.stderr


def test_passwords_are_stored_as_salted_scram_keys(tmp_path):
    ctl(tmp_path, "adduser", "frank", password="plaintext-marker")
    ctl(tmp_path, "adduser", "grace", password="plaintext-marker")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("xmppd.sqlite3*"))
    assert b"plaintext-marker" not in raw
    rows = {r[0]: r[1:] for r in sqlite3.connect(tmp_path / "xmppd.sqlite3").execute(
        "SELECT username, password_hash, scram_salt, scram_iterations, sha1_stored_key,"
        " sha256_stored_key, sha256_server_key FROM accounts")}
    frank, grace = rows["frank"], rows["grace"]
    assert frank[0] == "" and frank[2] == 10000 and len(frank[1]) == 16
    assert len(frank[3]) == 20 and len(frank[4]) == 32 and len(frank[5]) == 32
    assert all(a != b for a, b in zip(frank[1:], grace[1:]) if not isinstance(a, int))
    ctl(tmp_path, "passwd", "frank", password="another")
    changed = sqlite3.connect(tmp_path / "xmppd.sqlite3").execute(
        "SELECT scram_salt, sha256_stored_key FROM accounts WHERE username = 'frank'").fetchone()
    assert changed[0] != frank[1] and changed[1] != frank[4]


def test_hash_helpers():
    h = hash_password("pw", n=2 ** 10)
    assert verify_password(h, "pw") and not verify_password(h, "pW")
    assert not verify_password("garbage", "pw")
    assert not verify_password("md5$1$2$3$4$5", "pw")


def test_store_rejects_duplicates_in_process(tmp_path):
    accounts = store(tmp_path)
    accounts.create("heidi", "pw")
    with pytest.raises(AccountError):
        accounts.create("HEIDI", "pw")   # nodeprep folds case
    assert accounts.exists("heidi") and accounts.list() == ["heidi"]
