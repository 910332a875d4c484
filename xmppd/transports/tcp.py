"""XMPP over TCP (RFC 6120 §4): one XML stream per connection, STARTTLS or Direct TLS.

:class:`TCPTransport` is the Twisted protocol of one connection: it feeds
the hardened parser, checks the stream header's framing, writes our header,
footer and stream errors, runs STARTTLS, and enforces the per-IP
connection limit, the read rate, the pre-auth and idle timeouts. Everything
XMPP beyond the framing is the :class:`xmppd.session.Session`'s.
:class:`TCPListener` listens on ``c2s_port`` and, when
``c2s_direct_tls_port`` is set, for Direct TLS (XEP-0368: TLS from the first
byte, ALPN ``xmpp-client``) with the same transport class.
"""
import secrets

from twisted.application import service
from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.metrics import STATS
from xmppd.session.negotiation import LANG_RE
from xmppd.transports import limits
from xmppd.transports.base import ConnectionTransport
from xmppd.wire import NS_CLIENT, NS_STREAMS, XML_LANG
from xmppd.wire import parser as wparser
from xmppd.wire.errors import stream_error
from xmppd.wire.redact import one_line

log = Logger(namespace="xmppd.c2s")

CLOSE_GRACE = 10  # seconds a closing peer gets to finish the TLS shutdown
_FOOTER = b"</stream:stream>"



def client_header(root):
    """The client's stream header as it declared it (for --trace): namespaces and attributes."""
    parts = ["<stream:stream"]
    if root.defaultUri:
        parts.append(" xmlns='%s'" % domish.escapeToXml(root.defaultUri, 1))
    if root.uri:
        parts.append(" xmlns:stream='%s'" % domish.escapeToXml(root.uri, 1))
    for key, value in root.attributes.items():
        name = "xml:" + key[1] if isinstance(key, tuple) else key
        parts.append(" %s='%s'" % (name, domish.escapeToXml(value, 1)))
    return "".join(parts) + ">"


class TCPTransport(protocol.Protocol, ConnectionTransport):
    """One client TCP connection carrying one session."""

    def __init__(self, listener, direct_tls=False):
        self._setup(listener)
        self.secure = direct_tls          # XEP-0368: TLS from the first byte
        self.can_starttls = not direct_tls
        self.stream = None
        self.sid = None
        self.lang = "en"
        self._headerSent = False

    # -- connection events ----------------------------------------------------

    def connectionMade(self):
        self.send = self.transport.write    # the hot path: no wrapper per stanza
        peer = self.transport.getPeer()
        self._opened(getattr(peer, "host", None), getattr(peer, "port", "?"))
        self._new_parser()

    def _new_parser(self):
        """A fresh hardened parser (on connect and on every stream restart)."""
        s = self.session
        self.stream = wparser.new_stream(
            self.onDocumentStart, s.element_received, self.onDocumentEnd,
            self.cfg.max_stanza_size if s.bound else self.cfg.max_preauth_size)

    def dataReceived(self, data):
        if self.closing:
            return
        STATS.bytes_in += len(data)
        self._last = reactor.seconds()
        if self._rate is not None:
            data = self._rate.admit(data)   # beyond the read rate: held back, reading paused
            if not data:
                return
        try:
            if len(data) > wparser.PARSE_CHUNK:
                wparser.parse(self, data)     # the size limit also holds within one read
            else:
                self.stream.parse(data)
        except wparser.ParserError as e:
            condition, text = wparser.error_condition(e)
            if (condition == "not-well-formed" and self.sid is None and data[:1] == b"\x16"
                    and not self.secure):
                # A TLS ClientHello (record type 22) on the STARTTLS port: a client
                # trying Direct TLS (XEP-0368) here. Say where to go, in one line.
                port = self.listener.direct_tls_port
                text = "TLS handshake on the STARTTLS port; " + (
                    f"Direct TLS is on port {port}" if port else "Direct TLS is not enabled here")
            self.close_with_error(condition, text)
        except Exception:
            log.failure("c2s {cid}: unexpected error while parsing", cid=self.cid)
            self.close_with_error("internal-server-error")

    def connectionLost(self, reason):
        self._lost()
        self.stream = None

    # -- parser events --------------------------------------------------------

    def onDocumentStart(self, root):
        if self.closing:
            return
        self.sid = secrets.token_hex(8)
        if self.trace:
            log.info("c2s {cid} IN {xml}", cid=self.cid, xml=one_line(client_header(root)))
        lang = root.attributes.get(XML_LANG)
        if not (lang and LANG_RE.match(lang)):
            lang = None
        if lang:
            self.lang = lang
        if root.name != "stream":
            self.close_with_error("bad-format")
            return
        if root.uri != NS_STREAMS or root.defaultUri != NS_CLIENT:
            self.close_with_error("invalid-namespace")
            return
        self.session.stream_opened(root.attributes.get("to"), root.attributes.get("version", ""),
                                   lang)

    def onDocumentEnd(self):
        self.close()

    # -- the interface the session uses ---------------------------------------

    def send(self, data):
        # Replaced by the Twisted transport's own write in connectionMade.
        self.transport.write(data)

    def _write(self, data):
        if self.trace:
            log.info("c2s {cid} OUT {xml}", cid=self.cid, xml=one_line(data.decode("utf-8", "replace")))
        STATS.bytes_out += len(data)
        self.transport.write(data)

    def open_stream(self):
        self._write(("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' id='%s' from='%s' "
                     "version='1.0' xml:lang='%s'>"
                     % (self.sid, domish.escapeToXml(self.cfg.domain, 1), self.lang)).encode())
        self._headerSent = True

    def _ensure_header(self):
        if not self._headerSent:
            if self.sid is None:
                self.sid = secrets.token_hex(8)
            self.open_stream()

    def close_with_error(self, condition, text=None, app=None):
        """Send a stream error (after our header if needed), the footer, and close."""
        if self.closing:
            return
        self._ensure_header()
        self._write(stream_error(condition, text, app=app) + _FOOTER)
        if condition not in ("system-shutdown", "conflict", "connection-timeout"):
            log.info("c2s {cid}: stream error {cond}{text} ({who})", cid=self.cid,
                     cond=condition, text=f": {text}" if text else "", who=self.who())
        self.closing = True
        self._stream_closing()
        self._loseConnection()

    # The pre-split name, for callers outside the session.
    streamError = close_with_error

    def close(self):
        """Close our side of the stream cleanly."""
        if self.closing:
            return
        self.closing = True
        self._ensure_header()
        STATS.bytes_out += len(_FOOTER)
        self.transport.write(_FOOTER)
        self._stream_closing()
        self._loseConnection()

    def _loseConnection(self):
        # A TLS peer that never answers close_notify would keep the socket
        # forever; abort it after a grace period.
        self.transport.loseConnection()
        if self._closeTimer is None:
            self._closeTimer = reactor.callLater(CLOSE_GRACE, self.abort)

    def abort(self):
        self._closeTimer = None
        self.closing = True
        self.transport.abortConnection()

    def start_tls(self):
        self.transport.startTLS(self.listener.tls_factory)
        self.secure = True
        self.restart()

    def restart(self):
        self._headerSent = False
        self._new_parser()

    def session_bound(self):
        if self.stream is not None:
            self.stream.maxStanzaSize = self.cfg.max_stanza_size
        self._stop_preauth_timer()

    def _session_changed(self, session):
        if self.stream is not None:
            self.stream.ElementEvent = session.element_received


class TCPFactory(protocol.ServerFactory):
    noisy = False

    def __init__(self, listener, direct_tls=False):
        self.listener = listener
        self.direct_tls = direct_tls

    def buildProtocol(self, addr):
        p = TCPTransport(self.listener, self.direct_tls)
        p.factory = self
        return p


class TCPListener(service.Service):
    """Listens for XMPP clients on ``c2s_port`` (and Direct TLS); owns the live TCP connections.

    ``tls_factory`` is the STARTTLS context; ``direct_tls_factory`` (ALPN
    ``xmpp-client``) the Direct TLS one, None when ``c2s_direct_tls_port`` is off.
    """

    def __init__(self, manager, client_limits, tls_factory, direct_tls_factory=None):
        self.manager = manager
        self.cfg = manager.cfg
        self.limits = client_limits
        self.tls_factory = tls_factory
        self.direct_tls_factory = direct_tls_factory
        self.streams = set()
        self.port = None
        self.direct_port = None
        self.direct_tls_port = None
        self.factory = TCPFactory(self)
        self.send_guard = limits.SendBacklogGuard(self.streams, self.cfg.max_send_buffer)

    def startService(self):
        super().startService()
        self.send_guard.start()
        if not self.cfg.tls_cert:
            log.info("c2s TLS certificate: {path}", path=self.tls_factory.cert_path)
        self.port = reactor.listenTCP(self.cfg.c2s_port, self.factory,
                                      interface=self.cfg.interface)
        if self.direct_tls_factory is not None:
            self.direct_port = reactor.listenSSL(self.cfg.c2s_direct_tls_port,
                                                 TCPFactory(self, direct_tls=True),
                                                 self.direct_tls_factory,
                                                 interface=self.cfg.interface)
            self.direct_tls_port = self.direct_port.getHost().port
            log.info("c2s direct TLS listening on {iface}:{port}", iface=self.cfg.interface,
                     port=self.direct_tls_port)
        host = self.port.getHost()
        log.info("c2s listening on {iface}:{port}", iface=self.cfg.interface, port=host.port)

    def stopService(self):
        super().stopService()
        self.send_guard.stop()
        for xs in list(self.streams):
            xs.close_with_error("system-shutdown")
        ds = [p.stopListening() for p in (self.port, self.direct_port) if p is not None]
        self.port = self.direct_port = None
        if ds:
            return defer.DeferredList(ds)


def build(cfg, router, store, manager=None):
    """(manager, listener) for a TCP c2s service; ``manager`` is made when not given."""
    from xmppd.session import SessionManager
    from xmppd.transports import tls
    if manager is None:
        manager = SessionManager(cfg, router, store)
    direct = tls.context_factory(cfg, b"xmpp-client") if cfg.c2s_direct_tls_port >= 0 else None
    listener = TCPListener(manager, limits.ClientLimits(cfg), tls.context_factory(cfg), direct)
    return manager, listener
