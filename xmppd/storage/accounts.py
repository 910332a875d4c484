"""Local accounts: username -> salted scrypt password hash (never the password).

The hash string carries its parameters (``scrypt$n$r$p$salt$hash``, base64
parts) so the cost can be raised later without breaking stored accounts.
Hashing is CPU-heavy (~tens of ms) and releases the GIL, so the server calls
:func:`hash_password` / :func:`verify_password` in a thread pool; its
lookups (one indexed row) stay on the reactor's connection and its writes
go to the writer thread (:class:`AsyncAccountStore`).
"""
import base64
import hashlib
import hmac
import os
import time

from twisted.words.protocols.jabber.jid import nodeprep

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Tables: created and migrated by xmppd.storage.migrations (schema version 1).


class AccountError(Exception):
    """An account operation failed (exists, missing, invalid name); the message says why."""


def _b64(b):
    return base64.b64encode(b).decode("ascii")


def _scrypt(password, salt, n, r, p):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=HASH_BYTES)


def hash_password(password, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P):
    """Return the storable hash string of ``password`` with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(password, salt, n, r, p))}"


def verify_password(stored, password):
    """Constant-time check of ``password`` against a stored hash string."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, got)


# Compared against when the user does not exist, so that a wrong username
# costs the same time as a wrong password (no account enumeration by timing).
_DUMMY_HASH = None


def dummy_hash():
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("no such user")
    return _DUMMY_HASH


def prepare_username(username):
    """nodeprep the localpart; raise AccountError if it cannot be a JID localpart."""
    try:
        prepared = nodeprep.prepare(username)
    except UnicodeError:
        raise AccountError(f"invalid username {username!r}")
    if not prepared or len(prepared.encode("utf-8")) > 1023:
        raise AccountError(f"invalid username {username!r}")
    return prepared


class AccountStore:
    """Accounts in the shared SQLite database (synchronous, short statements)."""

    def __init__(self, db, cfg):
        self.db = db
        self.cfg = cfg

    def exists(self, username):
        return bool(self.db.query("SELECT 1 FROM accounts WHERE username = ?", (username,)))

    def get_hash(self, username):
        """The stored hash string, or None for an unknown user."""
        rows = self.db.query("SELECT password_hash FROM accounts WHERE username = ?", (username,))
        return rows[0][0] if rows else None

    def list(self):
        return [r[0] for r in self.db.query("SELECT username FROM accounts ORDER BY username")]

    def create(self, username, password, password_hash=None):
        """Create an account; AccountError if it exists. ``password_hash`` skips hashing."""
        username = prepare_username(username)
        if password_hash is None:
            if not password:
                raise AccountError("the password must not be empty")
            password_hash = hash_password(password)
        try:
            self.db.execute("INSERT INTO accounts (username, password_hash, created) VALUES (?, ?, ?)",
                            (username, password_hash, time.time()))
        except self.db.IntegrityError:
            raise AccountError(f"account {username!r} already exists")
        return username

    def passwd(self, username, password):
        username = prepare_username(username)
        if not password:
            raise AccountError("the password must not be empty")
        cur = self.db.execute("UPDATE accounts SET password_hash = ? WHERE username = ?",
                              (hash_password(password), username))
        if cur.rowcount == 0:
            raise AccountError(f"no account {username!r}")

    def delete(self, username):
        username = prepare_username(username)
        cur = self.db.execute("DELETE FROM accounts WHERE username = ?", (username,))
        if cur.rowcount == 0:
            raise AccountError(f"no account {username!r}")

    def check(self, username, password):
        """True if ``username`` exists and ``password`` matches (constant time)."""
        stored = self.get_hash(username)
        ok = verify_password(stored or dummy_hash(), password)
        return ok and stored is not None


class AsyncAccountStore(AccountStore):
    """The server's account store: lookups on the reactor's connection (one indexed row,
    never blocked by the writer in WAL mode), writes on the writer thread.

    ``create``, ``passwd`` and ``delete`` return Deferreds that fire once
    committed (or fail with AccountError / the database error). Pass
    ``password_hash`` to ``create``: hashing on the writer thread would
    hold up every other write.
    """

    def __init__(self, db, cfg, writer):
        super().__init__(db, cfg)
        self.writer = writer

    def create(self, username, password, password_hash=None):
        return self.writer.run(lambda db: AccountStore(db, self.cfg).create(username, password, password_hash))

    def passwd(self, username, password):
        return self.writer.run(lambda db: AccountStore(db, self.cfg).passwd(username, password))

    def delete(self, username):
        return self.writer.run(lambda db: AccountStore(db, self.cfg).delete(username))
