"""SCRAM-SHA-1/-SHA-256 and their -PLUS forms, server side (RFC 5802, RFC 7677).

:class:`ScramServer` is one exchange: client-first -> server-first ->
client-final -> server-final (sent with ``<success/>``). It never derives a
key: the account's StoredKey/ServerKey come from storage, so a login costs a
handful of HMACs.

Failure conditions (RFC 6120 §6.5), each raised as :class:`SASLFailure`:

* syntax (missing or misplaced attributes, a reserved ``m=``, bad ``=XX``
  escapes, bad inner base64, an oversized message, a proof of the wrong
  length, a gs2 flag that does not fit the mechanism) -> ``malformed-request``;
* a wrong proof, a nonce that is not the one of this exchange (including a
  replayed one), channel-binding data that does not match, a binding type we
  did not offer, or ``y`` when we advertised -PLUS (a downgrade,
  RFC 5802 §6) -> ``not-authorized``;
* an authzid that is not the user's bare JID -> ``invalid-authzid``.

XEP-0474: the server-first-message carries ``h=``, the hash of the
mechanisms and binding types we advertised, so a client can detect a
stripped list.
"""
import base64
import binascii
import hashlib
import hmac
import os
import secrets

from xmppd.auth.credentials import HASHES
from xmppd.auth.errors import SASLFailure

MAX_MESSAGE = 4096           # bytes; a real client-first/final message is < 300
NONCE_BYTES = 18


def _b64(b):
    return base64.b64encode(b).decode("ascii")


def _unb64(text):
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SASLFailure("malformed-request", "bad base64 in a SCRAM attribute")


def decode_saslname(value):
    """Undo the ``=2C`` / ``=3D`` escaping of RFC 5802 §5.1; any other '=' is malformed."""
    if "=" not in value:
        return value
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "=":
            code = value[i + 1:i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise SASLFailure("malformed-request", "bad escape in a SCRAM name")
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _printable_nonce(nonce):
    return nonce and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def downgrade_hash(hash_name, mechanisms, cb_types):
    """XEP-0474 §3.1: hash of the advertised mechanisms (and XEP-0440 binding types)."""
    s = "\x1e".join(sorted(mechanisms))
    if cb_types:
        s += "\x1f" + "\x1e".join(sorted(cb_types))
    return _b64(hashlib.new(HASHES[hash_name], s.encode("ascii")).digest())


class ScramServer:
    """One SCRAM exchange.

    ``ctx`` is the stream's :class:`xmppd.auth.sasl.Exchange`: it supplies
    ``domain``, ``lookup(username)`` -> (salt, iterations, stored_key,
    server_key or None/None for a user with no SCRAM keys), ``binding(type)``
    -> bytes or None, ``plus_offered`` and ``advertised`` (for XEP-0474) and
    ``check_throttle(username)``.
    """

    def __init__(self, name, ctx):
        self.name = name
        self.plus = name.endswith("-PLUS")
        self.hash_name = name[len("SCRAM-"):-len("-PLUS")] if self.plus else name[len("SCRAM-"):]
        self.h = HASHES[self.hash_name]
        self.ctx = ctx
        self.username = None
        self._state = "first"

    # The first message may come with <auth/> or in the first <response/>.
    def step(self, data):
        if len(data) > MAX_MESSAGE:
            raise SASLFailure("malformed-request", "SCRAM message too long", self.username)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SASLFailure("malformed-request", "SCRAM message is not UTF-8", self.username)
        if self._state == "first":
            return self._first(text)
        if self._state == "final":
            return self._final(text)
        raise SASLFailure("malformed-request", "SCRAM exchange already finished", self.username)

    def _first(self, text):
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise SASLFailure("malformed-request", "no gs2 header")
        flag, authz, bare = parts
        self.cb_type = None
        if flag == "n":
            if self.plus:
                raise SASLFailure("malformed-request", "-PLUS needs channel binding (p=)")
        elif flag == "y":
            if self.plus:
                raise SASLFailure("malformed-request", "-PLUS needs channel binding (p=)")
            if self.ctx.plus_offered:
                # RFC 5802 §6: the client thinks we cannot bind, but we offered it.
                # Not a password guess: the throttle does not count it (no lockout for
                # clients that only know tls-unique on TLS 1.3, like slixmpp <= 1.8).
                raise SASLFailure("not-authorized", "channel binding downgrade detected",
                                  counts=False)
        elif flag.startswith("p="):
            if not self.plus:
                raise SASLFailure("malformed-request", "channel binding needs a -PLUS mechanism")
            self.cb_type = flag[2:]
            if self.ctx.binding(self.cb_type) is None:
                raise SASLFailure("not-authorized", "channel binding type not offered",
                                  counts=False)
        else:
            raise SASLFailure("malformed-request", "bad gs2 channel-binding flag")
        authzid = None
        if authz:
            if not authz.startswith("a="):
                raise SASLFailure("malformed-request", "bad gs2 authzid")
            authzid = decode_saslname(authz[2:])
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            raise SASLFailure("malformed-request", "reserved SCRAM extension m=")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise SASLFailure("malformed-request", "client-first needs n= then r=")
        username = self.ctx.prepare_username(decode_saslname(attrs[0][2:]))
        self.username = username
        nonce = attrs[1][2:]
        if not _printable_nonce(nonce):
            raise SASLFailure("malformed-request", "bad client nonce", username)
        if authzid is not None:
            self.ctx.check_authzid(authzid, username)
        self.ctx.check_throttle(username)
        self.gs2_header = (flag + "," + authz + ",").encode("utf-8")
        salt, iterations, self._stored, self._server = self.ctx.lookup(username, self.hash_name)
        self.nonce = nonce + secrets.token_urlsafe(NONCE_BYTES)   # unguessable, fresh per exchange
        server_first = f"r={self.nonce},s={_b64(salt)},i={iterations}"
        h = self.ctx.downgrade_hash(self.hash_name)
        if h:
            server_first += f",h={h}"
        self._auth_prefix = f"{bare},{server_first},"
        self._state = "final"
        return ("challenge", server_first.encode("ascii"))

    def _final(self, text):
        self._state = "done"
        user = self.username
        attrs = text.split(",")
        if (len(attrs) < 3 or not attrs[0].startswith("c=") or not attrs[1].startswith("r=")
                or not attrs[-1].startswith("p=")):
            raise SASLFailure("malformed-request", "client-final needs c=, r= ... p=", user)
        if any(len(a) < 2 or a[1] != "=" for a in attrs[2:-1]):
            raise SASLFailure("malformed-request", "bad SCRAM attribute", user)
        cbind = _unb64(attrs[0][2:])
        proof = _unb64(attrs[-1][2:])
        size = hashlib.new(self.h).digest_size
        if len(proof) != size:
            raise SASLFailure("malformed-request", "proof of the wrong length", user)
        if not hmac.compare_digest(attrs[1][2:].encode("ascii", "replace"),
                                   self.nonce.encode("ascii")):
            raise SASLFailure("not-authorized", "nonce mismatch", user, counts=True)
        expected = self.gs2_header
        if self.cb_type is not None:
            expected += self.ctx.binding(self.cb_type)
        if not hmac.compare_digest(cbind, expected):
            raise SASLFailure("not-authorized", "channel binding mismatch", user, counts=True)
        without_proof = text[:text.rindex(",p=")]
        auth_message = (self._auth_prefix + without_proof).encode("utf-8")
        verifier = verify_proof(self.hash_name, self._stored, self._server, auth_message, proof)
        if verifier is None:
            raise SASLFailure("not-authorized", None, user, counts=True)
        return ("success", f"v={_b64(verifier)}".encode("ascii"), user)


def verify_proof(hash_name, stored_key, server_key, auth_message, proof):
    """RFC 5802 §3: the ServerSignature if ``proof`` is right for StoredKey, else None.

    ``stored_key``/``server_key`` None (unknown user) costs the same and fails.
    """
    h = HASHES[hash_name]
    size = hashlib.new(h).digest_size
    stored = stored_key if stored_key is not None else os.urandom(size)
    signature = hmac.digest(stored, auth_message, h)
    if len(proof) != size:
        return None
    client_key = (int.from_bytes(proof, "big") ^ int.from_bytes(signature, "big")).to_bytes(size, "big")
    ok = hmac.compare_digest(hashlib.new(h, client_key).digest(), stored)
    if not ok or server_key is None:
        return None
    return hmac.digest(server_key, auth_message, h)
