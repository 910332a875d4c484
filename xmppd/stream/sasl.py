"""SASL PLAIN (RFC 4616) message parsing, server side.

Only the parsing lives here; the state machine (auth/challenge/response/
abort) is in :mod:`xmppd.stream.c2s`. Other mechanisms (SCRAM) would add a
module-level parser next to this one.
"""
from twisted.words.protocols.jabber import sasl
from twisted.words.protocols.jabber.jid import nodeprep

NS_SASL = sasl.NS_XMPP_SASL
MECHANISMS = ("PLAIN",)


class SASLFailure(Exception):
    """Authentication failed with the RFC 6120 §6.5 ``condition``."""

    def __init__(self, condition, text=None):
        super().__init__(condition)
        self.condition = condition
        self.text = text


def decode_plain(b64):
    """Decode a PLAIN message; returns (authzid, username, password).

    ``b64`` is the element text: "" for an empty response, "=" for an
    explicitly empty one. Raises SASLFailure with the right condition.
    """
    b64 = b64.strip()
    if b64 in ("", "="):
        raise SASLFailure("malformed-request")
    try:
        data = sasl.fromBase64(b64)
    except sasl.SASLIncorrectEncodingError:
        raise SASLFailure("incorrect-encoding")
    try:
        authzid, authcid, password = data.decode("utf-8").split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SASLFailure("malformed-request")
    if not authcid or not password:
        raise SASLFailure("not-authorized")
    try:
        username = nodeprep.prepare(authcid)
    except UnicodeError:
        raise SASLFailure("not-authorized")
    if not username or len(username.encode("utf-8")) > 1023:
        raise SASLFailure("not-authorized")
    return authzid, username, password
