"""c2s over raw sockets: stream negotiation, stream errors, SASL failures, limits.

Raw sockets let us send what no client library would (bad headers, DTDs,
oversized stanzas). :class:`Raw` is also used by the routing and services
tests.
"""
import base64
import socket
import ssl
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import XmppdServer

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
C = "{jabber:client}"
HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'{extra}>")


class StreamClosed(AssertionError):
    pass


class Raw:
    """A blocking XMPP client socket that yields top-level elements (ElementTree)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.eof = False
        self.full = None
        self._reset()

    def _reset(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.header = None
        self.footer = False
        self.raw = b""
        self.queue = []

    def send(self, data):
        self.sock.sendall(data.encode("utf-8") if isinstance(data, str) else data)

    def _pump(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.raw += data
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
                if self.depth == 1:
                    self.header = el
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.queue.append(el)
                elif self.depth == 0:
                    self.footer = True
        return True

    def next(self, timeout=None):
        """The next top-level element; fails on timeout or end of stream."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.queue:
            if self.eof or self.footer:
                raise StreamClosed(f"stream closed; received {self.raw!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing received in time; buffer {self.raw!r}")
            self._pump(deadline)
        return self.queue.pop(0)

    def nothing(self, wait=0.3):
        """Assert that no element arrives within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not self.queue and not self.eof:
            self._pump(deadline)
        assert not self.queue, [ET.tostring(e) for e in self.queue]

    def wait_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._pump(deadline)
        assert self.eof, "server did not close the connection"

    def stream_error(self, timeout=None):
        """Expect a stream error; return its condition after checking the footer and close."""
        el = self.next(timeout)
        assert el.tag == f"{{{NS_STREAMS}}}error", ET.tostring(el)
        conds = [c.tag.split("}")[1] for c in el if c.tag != f"{{{NS_STREAM_ERR}}}text"]
        self.wait_closed()
        assert self.footer, f"no </stream:stream> after the error: {self.raw!r}"
        return conds[0]

    # negotiation helpers

    def open(self, to="localhost", extra=""):
        self._reset()
        self.send(HEADER.format(to=to, extra=extra))
        return self.next()

    def starttls(self):
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = self.next()
        assert el.tag == f"{{{NS_TLS}}}proceed", ET.tostring(el)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        return self.open()

    def auth(self, user, password, authzid=""):
        msg = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{msg}</auth>")
        return self.next()

    def bind(self, resource=None):
        res = f"<resource>{resource}</resource>" if resource is not None else ""
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>{res}</bind></iq>")
        return self.next()

    def login(self, user, password="secret", resource="raw"):
        self.open()
        self.starttls()
        el = self.auth(user, password)
        assert el.tag == f"{{{NS_SASL}}}success", ET.tostring(el)
        feats = self.open()
        assert feats.find(f"{{{NS_BIND}}}bind") is not None
        el = self.bind(resource)
        assert el.get("type") == "result", ET.tostring(el)
        self.full = el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text
        return self.full

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stanza_error(el):
    """The (type, condition) of a stanza error element."""
    err = el.find(f"{C}error")
    assert err is not None, ET.tostring(el)
    conds = [c.tag.split("}")[1] for c in err if c.tag.startswith(f"{{{NS_STANZAS}}}")
             and not c.tag.endswith("}text")]
    return err.get("type"), conds[0]


def start_server(tmp_path_factory, *args, config=None):
    """A module-wide server (one subprocess for many tests); returns the XmppdServer."""
    data_dir = tmp_path_factory.mktemp("data")
    extra = list(args)
    if config is not None:
        cfg_path = data_dir / "xmppd.toml"
        cfg_path.write_text(config)
        extra += ["--config", str(cfg_path)]
    server = XmppdServer(["--c2s-port", "0", "--data-dir", str(data_dir), *extra], data_dir)
    return server.wait_listening()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    server = start_server(tmp_path_factory, "--insecure-auth")
    yield server
    server.stop()


def open_raw(port):
    """Generator behind the ``raw``-style fixtures: ``connect()`` opens a Raw client;
    every client opened is closed at teardown."""
    clients = []

    def connect():
        c = Raw(port)
        clients.append(c)
        return c
    yield connect
    for c in clients:
        c.close()


@pytest.fixture
def raw(dev_server):
    yield from open_raw(dev_server.port)


# -- negotiation ---------------------------------------------------------------

def test_header_and_features_before_tls_on_loopback(raw):
    c = raw()
    feats = c.open(extra=" xml:lang='de'")
    h = c.header
    assert h.tag == f"{{{NS_STREAMS}}}stream"
    assert h.get("version") == "1.0" and h.get("from") == "localhost"
    assert len(h.get("id") or "") >= 8
    assert h.get("{http://www.w3.org/XML/1998/namespace}lang") == "de"
    assert b"xmlns='jabber:client'" in c.raw
    starttls = feats.find(f"{{{NS_TLS}}}starttls")
    assert starttls is not None and starttls.find(f"{{{NS_TLS}}}required") is None
    mechs = [m.text for m in feats.find(f"{{{NS_SASL}}}mechanisms")]
    assert mechs == ["PLAIN"]


def test_full_login_with_restarts_and_fresh_stream_ids(raw):
    c = raw()
    c.open()
    first_id = c.header.get("id")
    feats = c.starttls()
    assert feats.find(f"{{{NS_TLS}}}starttls") is None
    assert feats.find(f"{{{NS_SASL}}}mechanisms") is not None
    tls_id = c.header.get("id")
    assert c.auth("romeo", "pw").tag == f"{{{NS_SASL}}}success"
    feats = c.open()
    assert c.header.get("id") not in (first_id, tls_id)
    assert feats.find(f"{{{NS_BIND}}}bind") is not None
    session = feats.find("{urn:ietf:params:xml:ns:xmpp-session}session")
    assert session is not None and session.find("{urn:ietf:params:xml:ns:xmpp-session}optional") is not None
    el = c.bind("Balcony")
    assert el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text == "romeo@localhost/Balcony"
    c.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    el = c.next()
    assert el.get("type") == "result" and el.get("id") == "s1"


def test_server_generated_resource(raw):
    c = raw()
    full = c.login("gen", resource=None)
    assert full.startswith("gen@localhost/") and len(full) > len("gen@localhost/")


def test_resourceprep_applied_and_invalid_resource_refused(raw):
    c = raw()
    c.open(); c.starttls(); c.auth("prep", "pw"); c.open()
    el = c.bind("\u2126mega")   # OHM SIGN -> NFKC GREEK CAPITAL OMEGA
    assert el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text == "prep@localhost/\u03a9mega"
    d = raw()
    d.open(); d.starttls(); d.auth("prep2", "pw"); d.open()
    el = d.bind("bad\ue000")  # private use characters are prohibited by resourceprep
    assert el.get("type") == "error"
    assert stanza_error(el) == ("modify", "bad-request")


def test_client_footer_gets_footer_back(raw):
    c = raw()
    c.open()
    c.send("</stream:stream>")
    c.wait_closed()
    assert c.footer


def test_whitespace_keepalive_is_accepted(raw):
    c = raw()
    c.login("keepalive")
    c.send(" ")
    c.send("\n\n ")
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert c.next().get("type") == "result"


def test_resource_conflict_replaces_old_session(raw):
    old = raw()
    old.login("twin", resource="same")
    new = raw()
    assert new.login("twin", resource="same") == "twin@localhost/same"
    assert old.stream_error() == "conflict"
    new.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert new.next().get("type") == "result"


# -- stream errors ---------------------------------------------------------------

@pytest.mark.parametrize("header, condition", [
    ("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>",
     "invalid-namespace"),
    ("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='localhost' version='1.0'>", "invalid-namespace"),
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='example.net' version='1.0'>", "host-unknown"),
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='localhost' version='0.9'>", "unsupported-version"),  # (2.0: answered)
    ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='localhost'>", "unsupported-version"),
    ("<stream:hello xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='localhost' version='1.0'>", "bad-format"),
    ("this is not xml <<<", "not-well-formed"),
    ("<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY a 'aaaaaaaa'>]>"
     "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
     "to='localhost' version='1.0'>", "restricted-xml"),
    ("<!-- hi --><stream:stream xmlns='jabber:client' "
     "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
     "restricted-xml"),
])
def test_bad_stream_headers(raw, header, condition):
    c = raw()
    c.send(header)
    assert c.stream_error() == condition
    # our own header always precedes the error, in jabber:client
    assert c.header is not None and c.header.get("from") == "localhost"


@pytest.mark.parametrize("payload", [
    "<?pi data?>",
    "<!-- a comment -->",
    "<message><body>&unknown;</body></message>",
])
def test_restricted_or_broken_xml_inside_the_stream(raw, payload):
    c = raw()
    c.open()
    c.send(payload)
    cond = c.stream_error()
    assert cond == ("not-well-formed" if "&unknown;" in payload else "restricted-xml")


def test_stanza_before_authentication_is_not_authorized(raw):
    c = raw()
    c.open()
    c.send("<message to='someone@localhost'><body>hi</body></message>")
    assert c.stream_error() == "not-authorized"


def test_stanza_before_bind_is_not_authorized(raw):
    c = raw()
    c.open(); c.starttls(); c.auth("nobind", "pw"); c.open()
    c.send("<message to='someone@localhost'><body>hi</body></message>")
    assert c.stream_error() == "not-authorized"


def test_oversized_data_before_authentication_is_policy_violation(raw):
    c = raw()
    c.open()
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + "A" * 40000)
    assert c.stream_error() == "policy-violation"


def test_oversized_stanza_after_bind_is_policy_violation(raw):
    c = raw()
    c.login("big")
    c.send("<message to='big@localhost'><body>")
    for _ in range(20):
        c.send("x" * 16384)
    c.send("</body></message>")
    assert c.stream_error() == "policy-violation"


def test_large_but_allowed_stanza_is_delivered(raw):
    c = raw()
    c.login("notsobig")
    body = "y" * 100_000
    c.send(f"<message to='{c.full}' type='chat'><body>{body}</body></message>")
    el = c.next()
    assert el.find(f"{C}body").text == body


def test_unsupported_stanza_type_after_bind(raw):
    c = raw()
    c.login("weird")
    c.send("<frobnicate xmlns='urn:example:not-a-feature'/>")   # (urn:xmpp:sm:3 is served now)
    assert c.stream_error() == "unsupported-stanza-type"


def test_stanza_in_another_content_namespace_is_invalid_namespace(raw):
    c = raw()
    c.login("jabberserver")
    c.send("<message xmlns='jabber:server' to='x@localhost'><body>hi</body></message>")
    assert c.stream_error() == "invalid-namespace"


def test_iq_without_id_is_bad_format(raw):
    c = raw()
    c.login("noid")
    c.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert c.stream_error() == "bad-format"


def test_billion_laughs_is_rejected_quickly(raw):
    c = raw()
    lol = "".join(f"<!ENTITY l{i} '{('&l%d;' % (i - 1)) * 10 if i else 'lol'}'>" for i in range(10))
    c.send(f"<?xml version='1.0'?><!DOCTYPE s [{lol}]><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>&l9;")
    assert c.stream_error() == "restricted-xml"


# -- SASL ------------------------------------------------------------------------

def _tls_ready(raw):
    c = raw()
    c.open()
    c.starttls()
    return c


def _failure(el):
    assert el.tag == f"{{{NS_SASL}}}failure", ET.tostring(el)
    return el[0].tag.split("}")[1]


def test_sasl_invalid_mechanism(raw):
    c = _tls_ready(raw)
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='DIGEST-MD5'/>")
    assert _failure(c.next()) == "invalid-mechanism"
    assert c.auth("after", "retry").tag == f"{{{NS_SASL}}}success"   # may retry


def test_sasl_incorrect_encoding(raw):
    c = _tls_ready(raw)
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>not*base64!</auth>")
    assert _failure(c.next()) == "incorrect-encoding"


def test_sasl_malformed_request(raw):
    c = _tls_ready(raw)
    msg = base64.b64encode(b"only-one-part").decode()
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{msg}</auth>")
    assert _failure(c.next()) == "malformed-request"


def test_sasl_invalid_authzid(raw):
    c = _tls_ready(raw)
    assert _failure(c.auth("juliet", "pw", authzid="romeo@localhost")) == "invalid-authzid"
    assert c.auth("juliet", "pw", authzid="juliet@localhost").tag == f"{{{NS_SASL}}}success"


def test_sasl_challenge_response_and_abort(raw):
    c = _tls_ready(raw)
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'/>")
    assert c.next().tag == f"{{{NS_SASL}}}challenge"
    c.send(f"<abort xmlns='{NS_SASL}'/>")
    assert _failure(c.next()) == "aborted"
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>=</auth>")
    assert _failure(c.next()) == "malformed-request"
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'/>")
    assert c.next().tag == f"{{{NS_SASL}}}challenge"
    msg = base64.b64encode(b"\0chal\0pw").decode()
    c.send(f"<response xmlns='{NS_SASL}'>{msg}</response>")
    assert c.next().tag == f"{{{NS_SASL}}}success"


def test_too_many_sasl_failures_close_the_stream(raw):
    c = _tls_ready(raw)
    for _ in range(2):
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>!!!!</auth>")
        assert _failure(c.next()) == "incorrect-encoding"
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>!!!!</auth>")
    assert _failure(c.next()) == "incorrect-encoding"
    assert c.stream_error() == "policy-violation"


def test_plain_before_tls_allowed_on_loopback_dev_default(raw):
    c = raw()
    c.open()
    assert c.auth("cleartext", "pw").tag == f"{{{NS_SASL}}}success"


# -- servers with other settings ---------------------------------------------------

@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """Encryption required, real password checks, short timeouts."""
    server = start_server(tmp_path_factory, "--require-encryption", "true",
                          config="preauth_timeout = 1\n")
    yield server
    server.stop()


def test_encryption_required_hides_plain_and_refuses_auth(strict_server):
    c = Raw(strict_server.port)
    try:
        feats = c.open()
        assert feats.find(f"{{{NS_TLS}}}starttls/{{{NS_TLS}}}required") is not None
        assert feats.find(f"{{{NS_SASL}}}mechanisms") is None
        assert _failure(c.auth("x", "y")) == "encryption-required"
        feats = c.starttls()
        assert feats.find(f"{{{NS_SASL}}}mechanisms") is not None
        assert _failure(c.auth("nosuchuser", "y")) == "not-authorized"
    finally:
        c.close()


def test_preauth_timeout(strict_server):
    c = Raw(strict_server.port)
    try:
        c.open()
        assert c.stream_error(timeout=5) == "connection-timeout"
    finally:
        c.close()


def test_idle_timeout_and_keepalive(tmp_path_factory):
    server = start_server(tmp_path_factory, "--insecure-auth", config="idle_timeout = 1\n")
    try:
        c = Raw(server.port)
        c.login("idle")
        for _ in range(3):          # whitespace keepalives keep the session alive
            time.sleep(0.5)
            c.send(" ")
        c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert c.next().get("type") == "result"
        assert c.stream_error(timeout=5) == "connection-timeout"
        c.close()
    finally:
        server.stop()


def test_system_shutdown_on_stop(tmp_path_factory):
    server = start_server(tmp_path_factory, "--insecure-auth")
    c = Raw(server.port)
    try:
        c.login("bye")
        server.proc.terminate()
        assert c.stream_error() == "system-shutdown"
        assert server.proc.wait(10) in (0, -15)   # twist re-raises SIGTERM after a clean stop
    finally:
        c.close()
        server.stop()


def test_connection_lines_are_logged_and_insecure_warning(dev_server, raw):
    c = raw()
    c.login("logme")
    c.send("</stream:stream>")
    c.wait_closed()
    c.close()
    log = dev_server.wait_for_log(r"connection closed \(logme@localhost/raw\)").string
    assert "INSECURE AUTH" in log
    assert "authenticated as logme@localhost/raw" in log


def test_trace_logs_stanzas_with_session_but_never_credentials(tmp_path_factory):
    server = start_server(tmp_path_factory, "--insecure-auth", "--trace")
    c = Raw(server.port)
    try:
        c.open(); c.starttls()
        assert c.auth("tracy", "hunter2-password").tag == f"{{{NS_SASL}}}success"
        c.open(); c.bind("t")
        c.send("<iq type='get' id='traced' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        c.next()
        log = server.wait_for_log(r"OUT <iq [^\n]*id='traced'").string
        assert "tracy@localhost/t IN <iq" in log
        secret = base64.b64encode(b"\0tracy\0hunter2-password").decode()
        assert "hunter2" not in log and secret not in log
        assert "[redacted]" in log
    finally:
        c.close()
        server.stop()


def test_configured_certificate_is_used_and_unreadable_one_refused(xmppd_server_factory, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from xmppd.transports.tls import make_self_signed
    key, cert = make_self_signed(["localhost", "conference.localhost"])
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = xmppd_server_factory("--tls-cert", cert_path, "--tls-key", key_path)
    c = Raw(server.port)
    try:
        c.open()
        c.starttls()
        got = x509.load_der_x509_certificate(c.sock.getpeercert(binary_form=True))
        assert got.serial_number == cert.serial_number
    finally:
        c.close()
    bad = xmppd_server_factory("--tls-cert", tmp_path / "missing.pem", "--tls-key", key_path,
                               wait=False)
    assert bad.proc.wait(20) != 0
    assert "tls_cert" in bad.log() and "missing.pem" in bad.log()
