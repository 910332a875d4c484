"""XMPP over WebSocket (RFC 7395) on autobahn: one stanza per text message.

The client opens with ``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>``
and we answer with ours; each later message is one complete element
(``<stream:features/>``, SASL, stanzas), each with its namespace declared;
``<close/>`` ends the stream. The WebSocket handshake and framing are
autobahn's (subprotocol ``xmpp`` required, allowed origins, payload size);
this module only maps messages to a :class:`xmppd.session.Session` and
enforces the limits TCP enforces (stanza size, read rate, pre-auth and idle
timeouts, connections per IP).

All messages of one connection go through one hardened parser inside a
synthetic root element, so a message costs no new parser; a message that
is not exactly one complete element closes the stream.
"""
import secrets

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.metrics import STATS
from xmppd.session.negotiation import LANG_RE
from xmppd.transports.base import ConnectionTransport
from xmppd.wire import NS_CLIENT, NS_STREAMS, XML_LANG
from xmppd.wire import parser as wparser
from xmppd.wire.errors import stream_error
from xmppd.wire.redact import one_line
from xmppd.wire.serialize import standalone

log = Logger(namespace="xmppd.c2s")

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SUBPROTOCOL = "xmpp"
CLOSE_GRACE = 10
_ROOT = (b"<ws xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
_CLOSE = f"<close xmlns='{NS_FRAMING}'/>".encode()


class WebSocketTransport(WebSocketServerProtocol, ConnectionTransport):
    """One WebSocket connection carrying one session."""

    kind = "ws"

    def __init__(self, listener):
        super().__init__()
        self._setup(listener)
        self.stream = None
        self.sid = None
        self.lang = "en"
        self._opened_stream = False
        self._parsed = []        # top-level elements parsed from the current message

    # -- WebSocket events -----------------------------------------------------

    def onConnect(self, request):
        if SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST,
                                 "the WebSocket subprotocol 'xmpp' is required (RFC 7395)")
        return SUBPROTOCOL

    def onOpen(self):
        self.secure = ISSLTransport.providedBy(self.transport)   # served on http_tls_port
        peer = self.transport.getPeer()
        self._new_parser()
        self._opened(getattr(peer, "host", None), getattr(peer, "port", "?"))

    def _new_parser(self):
        s = self.session
        self.stream = wparser.new_stream(self._root, self._element, self._end,
                                         self._size_limit())
        self.stream.parse(_ROOT)

    def _size_limit(self):
        s = self.session
        return self.cfg.max_stanza_size if s is not None and s.bound else self.cfg.max_preauth_size

    def _root(self, root):
        pass

    def _end(self):
        self.close_with_error("not-well-formed")

    def dataReceived(self, data):
        # Raw bytes from the socket, before autobahn deframes them: the read rate applies here.
        if self.closing:
            return
        self._last = reactor.seconds()
        if self._rate is not None:
            data = self._rate.admit(data)
            if not data:
                return
        super().dataReceived(data)

    def onMessage(self, payload, isBinary):
        if self.closing:
            return
        STATS.bytes_in += len(payload)      # XMPP bytes: the messages, not the frame headers
        if isBinary:
            self.close_with_error("unsupported-encoding", "binary messages are not XMPP")
            return
        if len(payload) > self._size_limit():
            self.close_with_error("policy-violation", "stanza too large")
            return
        parsed = self._parsed = []
        try:
            self.stream.parse(payload)
        except wparser.ParserError as e:
            self.close_with_error(*wparser.error_condition(e))
            return
        except Exception:
            log.failure("ws {cid}: unexpected error while parsing", cid=self.cid)
            self.close_with_error("internal-server-error")
            return
        if self.closing:
            return
        if len(parsed) != 1 or self.stream.currElem is not None:
            # RFC 7395 §3.3.3: every message is exactly one complete element.
            self.close_with_error("not-well-formed", "one complete element per message")
            return
        try:
            self._dispatch(parsed[0])
        except Exception:
            log.failure("ws {cid}: unexpected error handling an element", cid=self.cid)
            self.close_with_error("internal-server-error")

    def _element(self, el):
        self._parsed.append(el)

    def _dispatch(self, el):
        if el.uri == NS_FRAMING:
            if el.name == "open":
                self._on_open(el)
            elif el.name == "close":
                self.close()
            else:
                self.close_with_error("unsupported-stanza-type")
            return
        if not self._opened_stream:
            self.close_with_error("not-authorized", "open the stream first")
            return
        self.session.element_received(el)

    def _on_open(self, el):
        attrs = el.attributes
        self.sid = secrets.token_hex(8)
        lang = attrs.get(XML_LANG)
        if not (lang and LANG_RE.match(lang)):
            lang = None
        if lang:
            self.lang = lang
        self.session.stream_opened(attrs.get("to"), attrs.get("version", ""), lang)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self._lost()
        self.stream = None

    # -- the interface the session uses ---------------------------------------

    def send(self, data):
        if self.closing:
            return
        message = standalone(data)
        STATS.bytes_out += len(message) - len(data)   # the session counted ``data``
        self.sendMessage(message, isBinary=False)

    def _write(self, data):
        if self.trace:
            log.info("ws {cid} OUT {xml}", cid=self.cid,
                     xml=one_line(data.decode("utf-8", "replace")))
        STATS.bytes_out += len(data)
        self.sendMessage(data, isBinary=False)

    def open_stream(self):
        self._opened_stream = True
        self._write((f"<open xmlns='{NS_FRAMING}' id='{self.sid}' "
                     f"from='{domish.escapeToXml(self.cfg.domain, 1)}' version='1.0' "
                     f"xml:lang='{self.lang}'/>").encode())

    def close_with_error(self, condition, text=None, app=None):
        if self.closing:
            return
        if self.state == self.STATE_OPEN:
            if not self._opened_stream:
                self.sid = self.sid or secrets.token_hex(8)
                self.open_stream()
            self._write(stream_error(condition, text, declare_prefix=True, app=app))
            self._write(_CLOSE)
        if condition not in ("system-shutdown", "conflict", "connection-timeout"):
            log.info("ws {cid}: stream error {cond}{text} ({who})", cid=self.cid,
                     cond=condition, text=f": {text}" if text else "", who=self.who())
        self._shutdown()

    streamError = close_with_error

    def close(self):
        if self.closing:
            return
        if self.state == self.STATE_OPEN:
            self._write(_CLOSE)
        self._shutdown()

    def _shutdown(self):
        self.closing = True
        self._stream_closing()
        if self.state == self.STATE_OPEN:
            self.sendClose(1000)
        if self._closeTimer is None and self.transport is not None:
            self._closeTimer = reactor.callLater(CLOSE_GRACE, self.abort)

    def abort(self):
        self._closeTimer = None
        self.closing = True
        if self.transport is not None:
            self.transport.abortConnection()

    def start_tls(self):
        raise RuntimeError("no STARTTLS over WebSocket")

    def restart(self):
        self._opened_stream = False     # the client sends a new <open/>

    def session_bound(self):
        if self.stream is not None:
            self.stream.maxStanzaSize = self.cfg.max_stanza_size
        self._stop_preauth_timer()


class WebSocketListenerFactory(WebSocketServerFactory):
    """autobahn's factory for ``/xmpp-websocket``: subprotocol, origins, sizes, handshake timeouts."""

    def __init__(self, listener, allowed_origins):
        super().__init__(protocols=[SUBPROTOCOL], server="xmppd")
        self.listener = listener
        cfg = listener.manager.cfg
        self.setProtocolOptions(
            maxMessagePayloadSize=cfg.max_stanza_size,
            maxFramePayloadSize=cfg.max_stanza_size,
            allowedOrigins=list(allowed_origins) or ["*"],
            autoPingInterval=0,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            webStatus=False,          # a plain GET gets a 4xx, not autobahn's status page
        )

    def buildProtocol(self, addr):
        p = WebSocketTransport(self.listener)
        p.factory = self
        return p


def resource(factory):
    """The twisted.web resource that upgrades to ``factory``'s protocol."""
    return WebSocketResource(factory)
