"""Local accounts: username -> SCRAM credentials (never the password).

Each account stores a salt, an iteration count and StoredKey/ServerKey for
SHA-1 and SHA-256 (:mod:`xmppd.auth.credentials`, schema version 5).
Accounts created before that keep a salted scrypt hash in
``password_hash`` (``scrypt$n$r$p$salt$hash``) until their next PLAIN login
upgrades them; :func:`verify_password` checks those. Key derivation is
CPU-heavy and releases the GIL, so the server runs it in a thread pool; its
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


_CRED_COLUMNS = ("scram_salt, scram_iterations, sha1_stored_key, sha1_server_key, "
                 "sha256_stored_key, sha256_server_key")


def _cred_values(creds):
    return (creds.salt, creds.iterations) + creds.keys["SHA-1"] + creds.keys["SHA-256"]


class AccountStore:
    """Accounts in the shared SQLite database (synchronous, short statements)."""

    def __init__(self, db, cfg):
        self.db = db
        self.cfg = cfg

    def _derive(self, password):
        from xmppd.auth.credentials import CredentialError, derive
        try:
            return derive(password, getattr(self.cfg, "scram_iterations", 10_000))
        except CredentialError as e:
            raise AccountError(str(e))

    def get_credentials(self, username):
        """(Credentials or None, legacy scrypt hash or None); (None, None) for an unknown user."""
        rows = self.db.query(f"SELECT password_hash, {_CRED_COLUMNS} FROM accounts WHERE username = ?",
                             (username,))
        if not rows:
            return None, None
        legacy, salt, iterations, s1, k1, s256, k256 = rows[0]
        if salt is None:
            return None, legacy or None
        from xmppd.auth.credentials import Credentials
        return Credentials(bytes(salt), iterations,
                           {"SHA-1": (bytes(s1), bytes(k1)), "SHA-256": (bytes(s256), bytes(k256))}), None

    def set_credentials(self, username, creds):
        """Store new SCRAM keys (password change, scrypt upgrade); drops the scrypt hash."""
        cur = self.db.execute(f"UPDATE accounts SET password_hash = '', ({_CRED_COLUMNS}) = "
                              "(?, ?, ?, ?, ?, ?) WHERE username = ?",
                              _cred_values(creds) + (username,))
        if cur.rowcount == 0:
            raise AccountError(f"no account {username!r}")

    def exists(self, username):
        return bool(self.db.query("SELECT 1 FROM accounts WHERE username = ?", (username,)))

    def get_hash(self, username):
        """The stored hash string, or None for an unknown user."""
        rows = self.db.query("SELECT password_hash FROM accounts WHERE username = ?", (username,))
        return rows[0][0] if rows else None

    def list(self):
        return [r[0] for r in self.db.query("SELECT username FROM accounts ORDER BY username")]

    def create(self, username, password, password_hash=None, credentials=None):
        """Create an account; AccountError if it exists.

        ``credentials`` (SCRAM keys derived elsewhere, e.g. in a thread) skips
        the derivation; ``password_hash`` stores a legacy scrypt hash (tests of
        the upgrade path only).
        """
        username = prepare_username(username)
        if password_hash is None and credentials is None:
            if not password:
                raise AccountError("the password must not be empty")
            credentials = self._derive(password)
        values = _cred_values(credentials) if credentials is not None else (None,) * 6
        try:
            self.db.execute(f"INSERT INTO accounts (username, password_hash, created, {_CRED_COLUMNS}) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (username, password_hash or "", time.time()) + values)
        except self.db.IntegrityError:
            raise AccountError(f"account {username!r} already exists")
        return username

    def passwd(self, username, password, credentials=None):
        username = prepare_username(username)
        if credentials is None:
            if not password:
                raise AccountError("the password must not be empty")
            credentials = self._derive(password)
        self.set_credentials(username, credentials)

    def delete(self, username):
        username = prepare_username(username)
        cur = self.db.execute("DELETE FROM accounts WHERE username = ?", (username,))
        if cur.rowcount == 0:
            raise AccountError(f"no account {username!r}")

    def check(self, username, password):
        """True if ``username`` exists and ``password`` matches (constant time; for tools and tests)."""
        from xmppd.auth.credentials import verify_plain
        creds, legacy = self.get_credentials(username)
        if creds is not None:
            return verify_plain(creds, password)
        ok = verify_password(legacy or dummy_hash(), password)
        return ok and legacy is not None


def provision(db, cfg, log=None):
    """Create the ``[[accounts]]`` / ``--user`` test accounts, idempotently, before serving.

    An existing account whose password differs gets the configured one, so
    a client's test suite can always log in with the credentials it knows.
    Runs at start-up, before the writer thread and the listeners.
    """
    if log is None:
        from twisted.logger import Logger
        log = Logger(namespace="xmppd.storage")
    store = AccountStore(db, cfg)
    for entry in cfg.accounts:
        name, password = entry["name"], entry["password"]
        if not store.exists(name):
            store.create(name, password)
            log.info("accounts: created test account {user}@{domain}", user=name, domain=cfg.domain)
        elif not store.check(name, password):
            store.passwd(name, password)
            log.info("accounts: reset the password of test account {user}@{domain}",
                     user=name, domain=cfg.domain)


class AsyncAccountStore(AccountStore):
    """The server's account store: lookups on the reactor's connection (one indexed row,
    never blocked by the writer in WAL mode), writes on the writer thread.

    ``create``, ``passwd``, ``set_credentials`` and ``delete`` return
    Deferreds that fire once committed (or fail with AccountError / the
    database error). Pass ``credentials`` to ``create``/``passwd``: deriving
    keys on the writer thread would hold up every other write.
    """

    def __init__(self, db, cfg, writer):
        super().__init__(db, cfg)
        self.writer = writer

    def create(self, username, password, password_hash=None, credentials=None):
        return self.writer.run(lambda db: AccountStore(db, self.cfg).create(
            username, password, password_hash, credentials))

    def passwd(self, username, password, credentials=None):
        return self.writer.run(lambda db: AccountStore(db, self.cfg).passwd(username, password, credentials))

    def set_credentials(self, username, creds):
        return self.writer.run(lambda db: AccountStore(db, self.cfg).set_credentials(username, creds))

    def delete(self, username):
        return self.writer.run(lambda db: AccountStore(db, self.cfg).delete(username))
