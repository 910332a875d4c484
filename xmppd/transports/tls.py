"""TLS for STARTTLS and Direct TLS (XEP-0368): shared OpenSSL contexts, and a dev certificate.

The context is built once per server (building one per connection would
cost a certificate load each time). With no configured certificate, a
self-signed EC certificate for the domain, the MUC domain and 127.0.0.1 is
generated into the data directory on first start and reused afterwards, so
clients (and tests) can pin it.
"""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from xmppd.config import ConfigError

DEV_CERT = "xmppd-dev-cert.pem"
DEV_KEY = "xmppd-dev-key.pem"


def make_self_signed(hosts):
    """Return (key, cert) for a self-signed EC P-256 certificate valid for ``hosts``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(h) for h in hosts]
                + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def dev_certificate_paths(data_dir):
    return os.path.join(data_dir, DEV_CERT), os.path.join(data_dir, DEV_KEY)


def ensure_dev_certificate(cfg):
    """Create the dev certificate in ``cfg.data_dir`` unless it exists; return (cert, key) paths."""
    cert_path, key_path = dev_certificate_paths(cfg.data_dir)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(cfg.data_dir, exist_ok=True)
    key, cert = make_self_signed([cfg.domain, cfg.muc_domain])
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


@implementer(IOpenSSLContextFactory)
class ServerTLSContextFactory:
    """Context factory for ``transport.startTLS``; TLS >= 1.2, one context for all streams."""

    def __init__(self, cert_path, key_path, alpn=None):
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        if alpn:
            # XEP-0368 §3: Direct TLS clients offer ALPN "xmpp-client"; one that
            # offers none (or only others) still gets the stream.
            def select(conn, offered):
                return alpn if alpn in offered else SSL.NO_OVERLAPPING_PROTOCOLS
            ctx.set_alpn_select_callback(select)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        # No compression (CRIME); no client-initiated TLS 1.2 renegotiation (CPU DoS).
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
                        | getattr(SSL, "OP_NO_RENEGOTIATION", 0))
        # Idle sessions dominate a chat server: free OpenSSL's per-connection
        # 16+ KiB read/write buffers between records (~35 KiB per idle session).
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        try:
            ctx.use_certificate_chain_file(cert_path.encode() if isinstance(cert_path, str) else cert_path)
            ctx.use_privatekey_file(key_path)
            ctx.check_privatekey()
        except (SSL.Error, OSError) as e:
            raise ConfigError(f"cannot load TLS certificate {cert_path!r} / key {key_path!r}: {e}")
        self._ctx = ctx
        self.cert_path = cert_path

    def getContext(self):
        return self._ctx


def context_factory(cfg, alpn=None):
    """The server's TLS context: the configured cert/key, or the generated dev certificate.

    ``alpn`` (e.g. ``b"xmpp-client"``) is selected when a client offers it (Direct TLS).
    """
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("config keys 'tls_cert' and 'tls_key' must be given together")
    if cfg.tls_cert:
        for key, path in (("tls_cert", cfg.tls_cert), ("tls_key", cfg.tls_key)):
            if not os.access(path, os.R_OK):
                raise ConfigError(f"config key {key!r}: cannot read {path!r}")
        return ServerTLSContextFactory(cfg.tls_cert, cfg.tls_key, alpn)
    try:
        cert_path, key_path = ensure_dev_certificate(cfg)
    except OSError as e:
        raise ConfigError(f"cannot write the dev certificate into {cfg.data_dir}: {e}")
    return ServerTLSContextFactory(cert_path, key_path, alpn)
