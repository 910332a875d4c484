"""A client-side SCRAM (RFC 5802 / RFC 7677) written for the tests, independent of xmppd.auth.

It is checked against the RFC test vectors in test_auth_scram.py, and lets
the tests drive the server with exact, also deliberately wrong, messages.
"""
import base64
import hashlib
import hmac

HASH = {"SHA-1": "sha1", "SHA-256": "sha256"}


def b64(b):
    return base64.b64encode(b).decode()


def attrs(msg):
    return dict(part.split("=", 1) for part in msg.split(","))


class ScramClient:
    def __init__(self, hash_name, username, password, nonce, gs2_header="n,,", cb_data=b""):
        self.h = HASH[hash_name]
        self.password = password.encode()
        self.gs2_header = gs2_header
        self.cb_data = cb_data
        self.first_bare = f"n={username.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
        self.nonce = nonce
        self.salted = None

    def first(self):
        return self.gs2_header + self.first_bare

    def final(self, server_first, salted=None, nonce=None, proof_tamper=False):
        a = attrs(server_first)
        assert a["r"].startswith(self.nonce)
        self.salted = salted or hashlib.pbkdf2_hmac(self.h, self.password, base64.b64decode(a["s"]),
                                                    int(a["i"]))
        cbind = b64(self.gs2_header.encode() + self.cb_data)
        without = f"c={cbind},r={nonce or a['r']}"
        auth = f"{self.first_bare},{server_first},{without}".encode()
        client_key = hmac.digest(self.salted, b"Client Key", self.h)
        stored = hashlib.new(self.h, client_key).digest()
        sig = hmac.digest(stored, auth, self.h)
        proof = bytes(x ^ y for x, y in zip(client_key, sig))
        if proof_tamper:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        server_key = hmac.digest(self.salted, b"Server Key", self.h)
        self.expected_verifier = b64(hmac.digest(server_key, auth, self.h))
        return f"{without},p={b64(proof)}"
