"""SASL PLAIN (RFC 4616), server side, checked against stored SCRAM keys.

One PBKDF2-SHA-256 at the account's iteration count, run off the reactor
thread. An account still holding only a scrypt hash (created before SCRAM
keys were stored) is checked with scrypt once and upgraded to SCRAM keys on
that successful login. Unknown users cost the same PBKDF2 (against a fake
salt) as real ones.
"""
from twisted.words.protocols.jabber.jid import nodeprep

from xmppd.auth import credentials as credmod
from xmppd.auth.errors import SASLFailure


def decode_plain(data):
    """``authzid\\0authcid\\0password`` -> (authzid, username, password); SASLFailure otherwise."""
    try:
        authzid, authcid, password = data.decode("utf-8").split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SASLFailure("malformed-request", "PLAIN needs authzid NUL authcid NUL password")
    if not authcid or not password:
        raise SASLFailure("not-authorized")
    return authzid, prepare_username(authcid), password


def prepare_username(authcid):
    """nodeprep the SASL username; not-authorized if it cannot be a localpart (RFC 6120 §6.4.6)."""
    try:
        username = nodeprep.prepare(authcid)
    except UnicodeError:
        raise SASLFailure("not-authorized")
    if not username or len(username.encode("utf-8")) > 1023:
        raise SASLFailure("not-authorized")
    return username


def check_plain(creds, legacy_hash, password, fake, iterations):
    """Thread side: is ``password`` right? Returns (ok, upgraded Credentials or None).

    ``fake`` stands in for an unknown user so the work done is the same.
    """
    if creds is not None:
        return credmod.verify_plain(creds, password), None
    if legacy_hash:
        from xmppd.storage.accounts import verify_password
        if verify_password(legacy_hash, password):
            try:
                return True, credmod.derive(password, iterations)
            except credmod.CredentialError:
                return True, None
        return False, None
    credmod.verify_plain(fake, password)
    return False, None


class PlainServer:
    """One PLAIN exchange: a single message, answered with success or failure."""

    name = "PLAIN"

    def __init__(self, ctx):
        self.ctx = ctx
        self.username = None
        self._done = False

    def step(self, data):
        if self._done:
            raise SASLFailure("malformed-request", "PLAIN takes one message", self.username)
        self._done = True
        authzid, username, password = decode_plain(data)
        self.username = username
        if authzid:
            self.ctx.check_authzid(authzid, username)
        self.ctx.check_throttle(username)
        return self.ctx.verify_plain(username, password)
