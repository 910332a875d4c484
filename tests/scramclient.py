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


class RawClient:
    """A blocking raw XMPP client with pyOpenSSL TLS, for channel-binding tests.

    Python's ``ssl`` cannot export keying material (no tls-exporter), so TLS
    here is pyOpenSSL on the client side too; ``binding(type)`` computes the
    RFC 9266 / RFC 5929 data independently of the server.
    """

    def __init__(self, port, domain="localhost", direct_tls=False, max_tls=None, timeout=10):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = None
        self.buf = ""
        self.domain = domain
        self.max_tls = max_tls
        if direct_tls:
            self._tls(alpn=True)

    def _tls(self, alpn=False):
        from OpenSSL import SSL
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if self.max_tls:
            ctx.set_max_proto_version(self.max_tls)
        if alpn:
            ctx.set_alpn_protos([b"xmpp-client"])
        conn = SSL.Connection(ctx, self.sock)
        conn.set_connect_state()
        conn.set_tlsext_host_name(self.domain.encode())
        self.sock.setblocking(True)
        conn.do_handshake()
        self.conn = conn

    def send(self, data):
        data = data.encode() if isinstance(data, str) else data
        (self.conn or self.sock).sendall(data)

    def read_until(self, pattern):
        import re
        import time
        from OpenSSL import SSL
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + 10
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"timeout waiting for {pattern!r}; got {self.buf!r}")
            try:
                chunk = (self.conn or self.sock).recv(65536)
            except (SSL.ZeroReturnError, SSL.SysCallError):
                chunk = b""
            if not chunk:
                raise AssertionError(f"closed while waiting for {pattern!r}; got {self.buf!r}")
            self.buf += chunk.decode()

    def header(self):
        self.send(f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
                  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        return self.read_until(r"<stream:features>(.*?)</stream:features>").group(1)

    def starttls(self):
        self.header()
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(r"<proceed[^>]*/>")
        self._tls()
        return self.header()

    def binding(self, cb_type):
        if cb_type == "tls-exporter":
            return self.conn.export_keying_material(b"EXPORTER-Channel-Binding", 32)
        if cb_type == "tls-unique":
            return self.conn.get_finished()
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.serialization import Encoding
        cert = self.conn.get_peer_certificate().to_cryptography()
        algo = cert.signature_hash_algorithm
        if algo.name in ("md5", "sha1"):
            algo = hashes.SHA256()
        h = hashes.Hash(algo)
        h.update(cert.public_bytes(Encoding.DER))
        return h.finalize()

    def sasl(self, mech, client, final_kw=None):
        """Run a SCRAM exchange; returns ('success', verifier ok) or ('failure', condition)."""
        ns = "urn:ietf:params:xml:ns:xmpp-sasl"
        self.send(f"<auth xmlns='{ns}' mechanism='{mech}'>{b64(client.first().encode())}</auth>")
        m = self.read_until(r"<(challenge|failure)[^>]*>(.*?)</\1>")
        if m.group(1) == "failure":
            return "failure", _condition(m.group(2))
        server_first = base64.b64decode(m.group(2)).decode()
        self.send(f"<response xmlns='{ns}'>{b64(client.final(server_first, **(final_kw or {})).encode())}"
                  "</response>")
        m = self.read_until(r"<(success|failure)[^>]*>(.*?)</\1>")
        if m.group(1) == "failure":
            return "failure", _condition(m.group(2))
        return "success", base64.b64decode(m.group(2)).decode() == "v=" + client.expected_verifier

    def close(self):
        try:
            self.send("</stream:stream>")
        except Exception:
            pass
        self.sock.close()


def _condition(xml):
    import re
    return re.match(r"\s*<([a-z-]+)", xml).group(1)
