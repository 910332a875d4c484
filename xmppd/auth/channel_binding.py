"""TLS channel bindings for SCRAM-*-PLUS (RFC 5056) and their XEP-0440 advert.

* ``tls-exporter`` (RFC 9266): 32 bytes of keying material exported with
  the label ``EXPORTER-Channel-Binding``. Only on TLS 1.3 (RFC 9266 §3:
  on TLS 1.2 it is only safe with extended master secret, which we
  cannot check through pyOpenSSL).
* ``tls-server-end-point`` (RFC 5929 §4): a hash of our certificate,
  SHA-256 unless its signature uses a stronger hash. Always available;
  XEP-0440 §3 makes it mandatory for servers.
* ``tls-unique`` (RFC 5929 §3): the first Finished message of the
  handshake. Only on TLS <= 1.2 (RFC 9266 forbids it on 1.3); renegotiation
  is disabled on our contexts, which removes the triple-handshake risk.
  Offered because clients built on Python's ``ssl`` (slixmpp) have no
  other binding.
"""
from OpenSSL import SSL

NS_SASL_CB = "urn:xmpp:sasl-cb:0"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"

_endpoint_hashes = {}     # id(SSL.Context) -> certificate hash (one per server context)


def _tls13(conn):
    return conn.get_protocol_version_name() == "TLSv1.3"


def types_for(conn):
    """Binding types usable on ``conn`` (an OpenSSL Connection, or None for plain TCP)."""
    if conn is None:
        return ()
    if _tls13(conn):
        return ("tls-exporter", "tls-server-end-point")
    return ("tls-server-end-point", "tls-unique")


def _endpoint(conn):
    ctx = conn.get_context()
    h = _endpoint_hashes.get(id(ctx))
    if h is None:
        from cryptography.hazmat.primitives import hashes
        cert = conn.get_certificate().to_cryptography()
        algo = cert.signature_hash_algorithm
        if algo is None or algo.name in ("md5", "sha1"):
            algo = hashes.SHA256()
        digest = hashes.Hash(algo)
        from cryptography.hazmat.primitives.serialization import Encoding
        digest.update(cert.public_bytes(Encoding.DER))
        h = digest.finalize()
        if len(_endpoint_hashes) > 16:     # contexts are per server: this never grows in practice
            _endpoint_hashes.clear()
        _endpoint_hashes[id(ctx)] = h
    return h


def _session_reused(conn):
    lib = getattr(SSL, "_lib", None)
    fn = getattr(lib, "SSL_session_reused", None)
    return bool(fn(conn._ssl)) if fn is not None else False


def data_for(conn, cb_type):
    """The channel-binding data of ``cb_type`` on ``conn``, or None if it does not apply."""
    if conn is None or cb_type not in types_for(conn):
        return None
    if cb_type == "tls-exporter":
        return conn.export_keying_material(EXPORTER_LABEL, 32)
    if cb_type == "tls-server-end-point":
        return _endpoint(conn)
    # tls-unique: the first Finished of the handshake: the client's on a full
    # handshake, ours on a resumed one.
    return conn.get_finished() if _session_reused(conn) else conn.get_peer_finished()


def advert(types):
    """The XEP-0440 ``<sasl-channel-binding/>`` stream feature for ``types``."""
    if not types:
        return ""
    return ("<sasl-channel-binding xmlns='%s'>%s</sasl-channel-binding>"
            % (NS_SASL_CB, "".join(f"<channel-binding type='{t}'/>" for t in types)))
