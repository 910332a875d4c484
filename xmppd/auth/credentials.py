"""SCRAM credentials (RFC 5802 §3, RFC 7677): what an account stores instead of a password.

Per account: a random salt, an iteration count, and StoredKey + ServerKey
for SHA-1 and for SHA-256. The slow part (PBKDF2, "Hi()") runs once when
the password is set; a SCRAM login then costs the server a few HMACs, and a
PLAIN login one PBKDF2 (SHA-256) at the account's iteration count.

The same salt and count serve both hashes: the two PBKDF2 outputs are
independent, and one salt keeps the row small.

Unknown users get a salt derived from the username with a server secret
kept in the data directory (:class:`ServerSecret`), so a SCRAM challenge
for ``nosuchuser`` looks like a real account's and stays the same across
restarts (no account enumeration, RFC 5802 §9).
"""
import hashlib
import hmac
import os
import stringprep
import unicodedata
from dataclasses import dataclass

DEFAULT_ITERATIONS = 10_000
MIN_ITERATIONS = 4096          # RFC 5802 §5.1 / RFC 7677: at least 4096
MAX_ITERATIONS = 10_000_000    # a config typo must not make every login take minutes
SALT_BYTES = 16
SECRET_FILENAME = "auth-secret"

# hash name in the mechanism -> hashlib name
HASHES = {"SHA-1": "sha1", "SHA-256": "sha256"}


class CredentialError(ValueError):
    """The password cannot be used (empty, or prohibited by SASLprep)."""


def saslprep(text):
    """SASLprep (RFC 4013) of a password: the form both sides hash.

    Maps non-ASCII spaces to SPACE, drops characters "commonly mapped to
    nothing", NFKC-normalises, and refuses prohibited and unassigned code
    points and wrong bidi (RFC 3454 §6). ASCII passes unchanged.
    """
    if text.isascii():
        if any(ord(c) < 0x20 or c == "\x7f" for c in text):
            raise CredentialError("control characters are not allowed in passwords")
        return text
    mapped = "".join(" " if stringprep.in_table_c12(c) else c
                     for c in text if not stringprep.in_table_b1(c))
    out = unicodedata.normalize("NFKC", mapped)
    for c in out:
        if (stringprep.in_table_c12(c) or stringprep.in_table_c21_c22(c)
                or stringprep.in_table_c3(c) or stringprep.in_table_c4(c)
                or stringprep.in_table_c5(c) or stringprep.in_table_c6(c)
                or stringprep.in_table_c7(c) or stringprep.in_table_c8(c)
                or stringprep.in_table_c9(c) or stringprep.in_table_a1(c)):
            raise CredentialError("the password contains a prohibited character")
    if any(stringprep.in_table_d1(c) for c in out):
        if any(stringprep.in_table_d2(c) for c in out) or not (
                stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise CredentialError("the password mixes text directions")
    return out


def salted_password(hash_name, password, salt, iterations):
    """Hi(Normalize(password), salt, i) of RFC 5802 §2.2 (PBKDF2-HMAC)."""
    return hashlib.pbkdf2_hmac(HASHES[hash_name], saslprep(password).encode("utf-8"),
                               salt, iterations)


def keys_from_salted(hash_name, salted):
    """(StoredKey, ServerKey) from a SaltedPassword (RFC 5802 §3)."""
    h = HASHES[hash_name]
    client_key = hmac.digest(salted, b"Client Key", h)
    return hashlib.new(h, client_key).digest(), hmac.digest(salted, b"Server Key", h)


@dataclass(frozen=True)
class Credentials:
    """What is stored per account: never the password."""
    salt: bytes
    iterations: int
    keys: dict          # hash name -> (stored_key, server_key)

    def stored_key(self, hash_name):
        return self.keys[hash_name][0]

    def server_key(self, hash_name):
        return self.keys[hash_name][1]


def derive(password, iterations=DEFAULT_ITERATIONS, salt=None):
    """Fresh credentials for ``password`` (two PBKDF2 runs: call it off the reactor thread)."""
    if not password:
        raise CredentialError("the password must not be empty")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    return Credentials(salt, iterations,
                       {name: keys_from_salted(name, salted_password(name, password, salt, iterations))
                        for name in HASHES})


def verify_plain(creds, password):
    """Constant-time check of a PLAIN password against stored keys (one PBKDF2-SHA-256)."""
    try:
        salted = salted_password("SHA-256", password, creds.salt, creds.iterations)
    except CredentialError:
        salted = b"\0" * 32
    stored, _ = keys_from_salted("SHA-256", salted)
    return hmac.compare_digest(stored, creds.stored_key("SHA-256"))


class ServerSecret:
    """32 random bytes in ``<data_dir>/auth-secret`` (mode 0600), created on first use.

    Only used to derive stable fake salts for unknown usernames; losing it
    just changes those fake salts.
    """

    def __init__(self, data_dir):
        path = os.path.join(data_dir, SECRET_FILENAME)
        try:
            with open(path, "rb") as fh:
                secret = fh.read()
        except FileNotFoundError:
            secret = b""
        if len(secret) < 32:
            secret = os.urandom(32)
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secret)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)     # never replace a secret another process just wrote
            except FileExistsError:
                with open(path, "rb") as fh:
                    secret = fh.read()
            finally:
                os.unlink(tmp)
        self._secret = secret

    def fake_salt(self, username):
        """A salt that looks like a real one and is the same every time for ``username``."""
        return hmac.digest(self._secret, b"xmppd fake salt\0" + username.encode("utf-8"),
                           "sha256")[:SALT_BYTES]
