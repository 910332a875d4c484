"""Accepting external components (XEP-0114) on ``component_port``.

One ``[[components]]`` entry per domain with its secret. While a component
is connected, ``router.routes[domain]`` is its stream: stanzas for the
domain are written to it, and stanzas it sends are routed like any other
once their ``from`` is checked. While it is not connected, the route is
:class:`Offline`, which answers ``service-unavailable`` (XEP-0114 leaves
this to the server; it is what RFC 6120 §10.5.3 gives for a service that
cannot answer). The same limits as for clients apply: the stanza size
(``max_preauth_size`` before the handshake, then ``max_stanza_size``), the
pre-auth timeout, connections per IP and a read rate
(``component_read_rate_limit``) outside ``limits_exempt``, and a component
that stops reading is closed once ``max_send_buffer`` bytes wait for it.

Fan-out (XEP-0033 extended stanza addressing, for components only): a
component may send one stanza to the server's domain with
``<addresses xmlns='http://jabber.org/protocol/address'>`` listing up to
``component_multicast_max`` ``bcc`` recipients; the server removes the
addresses and delivers a copy to each, serialised once with ``to``
patched per local session (``router.route_many``, the built-in MUC's fast
path). This is how ``xmppd-muc`` broadcasts room traffic through xmppd.
The feature is shown in disco#info only to connected components (clients
cannot use it). Local full JIDs without a session are dropped, as in
``route_many``; other recipients get an ordinary routed copy.

Stream errors (RFC 6120 §4.9.3, XEP-0114 §3):
``host-unknown`` for a domain that is not configured, ``not-authorized``
for a wrong handshake, ``conflict`` for a second connection for a domain
that is connected, ``invalid-from`` for a stanza whose ``from`` is not at
the component's domain, ``improper-addressing`` for one without ``to`` or
``from``, ``policy-violation`` for an oversize stanza, ``restricted-xml``
for DTDs, comments and processing instructions.
"""
import hmac
import secrets

from twisted.application import service
from twisted.internet import protocol, reactor
from twisted.logger import Logger
from twisted.words.xish import domish
from wokkel import generic

from xmppd import jid as jidlib
from xmppd.component import NS_COMPONENT, NS_STREAMS, handshake_digest, rehome
from xmppd.transports import limits
from xmppd.wire import parser as wparser
from xmppd.wire.redact import for_trace
from xmppd.wire.serialize import to_bytes

NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS = frozenset(("message", "presence", "iq"))
NS_ADDRESS = "http://jabber.org/protocol/address"
CLOSE_GRACE = 10.0

log = Logger(namespace="xmppd.component")


def _reject_restricted(*args):
    raise domish.ParserError("restricted-xml")


class Offline:
    """The route of a configured component that is not connected: bounce everything."""

    def __init__(self, router, domain):
        self.router = router
        self.domain = domain

    def send(self, el):
        self.router.bounce(el, "service-unavailable")


class ComponentStream(protocol.Protocol):
    """One component connection: header, handshake, then stanzas both ways."""

    def __init__(self, service):
        self.service = service
        self.cfg = service.cfg
        self.router = service.router
        self.trace = service.cfg.trace
        self.domain = None
        self.full = None          # (for limits.SendBacklogGuard's log line)
        self.cid = "component"
        self.sid = None
        self.authenticated = False
        self.closing = False
        self.header_sent = False
        self.stream = None
        self.peer = "?"
        self.limited_ip = None
        self._ip_counted = False
        self._rate = None
        self._timer = None
        self._close_timer = None

    # -- connection -----------------------------------------------------------

    def connectionMade(self):
        peer = self.transport.getPeer()
        host = getattr(peer, "host", None)
        self.peer = f"{host}:{getattr(peer, 'port', '?')}"
        self._new_parser(self.cfg.max_preauth_size)
        svc = self.service
        svc.streams.add(self)
        if host is not None and host not in svc.exempt:
            self.limited_ip = host
            if not svc.conn_limit.acquire(host):
                self.stream_error("policy-violation", "too many connections from your address")
                return
            self._ip_counted = True
            if self.cfg.component_read_rate_limit:
                self._rate = limits.ReadRate(self, self.cfg.component_read_rate_limit)
        if self.cfg.preauth_timeout > 0:
            self._timer = reactor.callLater(self.cfg.preauth_timeout, self._timeout)
        log.info("component connection from {peer}", peer=self.peer)

    def _new_parser(self, max_size):
        self.stream = stream = domish.elementStream()
        stream.DocumentStartEvent = self.on_start
        stream.ElementEvent = self.on_element
        stream.DocumentEndEvent = self.close
        p = stream.parser
        p.buffer_text = True
        p.buffer_size = 8192
        p.StartDoctypeDeclHandler = _reject_restricted
        p.EntityDeclHandler = _reject_restricted
        p.CommentHandler = _reject_restricted
        p.ProcessingInstructionHandler = _reject_restricted
        stream.maxStanzaSize = max_size
        stream.maxElementCount = 10000
        wparser.limit_depth(stream)

    def dataReceived(self, data):
        if self.closing:
            return
        if self._rate is not None:
            data = self._rate.admit(data)
            if not data:
                return
        try:
            wparser.parse(self, data)
        except domish.ParserError as e:
            msg = str(e)
            if "restricted-xml" in msg:
                self.stream_error("restricted-xml")
            elif "Maximum" in msg:
                self.stream_error("policy-violation", "stanza too large")
            else:
                self.stream_error("not-well-formed")
        except Exception:
            log.failure("component {domain}: unexpected error while parsing", domain=self.domain)
            self.stream_error("internal-server-error")

    def connectionLost(self, reason):
        self.closing = True
        svc = self.service
        svc.streams.discard(self)
        if self._ip_counted:
            self._ip_counted = False
            svc.conn_limit.release(self.limited_ip)
        if self._rate is not None:
            self._rate.stop()
            self._rate = None
        for t in (self._timer, self._close_timer):
            if t is not None and t.active():
                t.cancel()
        self._timer = self._close_timer = None
        if self.authenticated:
            self.authenticated = False
            svc.detach(self)
            log.info("component {domain} disconnected", domain=self.domain)
        self.stream = None

    def who(self):
        """For limits.SendBacklogGuard's log line."""
        return self.domain or self.peer

    def _timeout(self):
        self._timer = None
        if not self.authenticated and not self.closing:
            self.stream_error("connection-timeout")

    # -- stream ---------------------------------------------------------------

    def on_start(self, root):
        if self.closing:
            return
        self.sid = secrets.token_hex(16)
        if root.uri != NS_STREAMS or root.name != "stream":
            self.stream_error("invalid-namespace")
            return
        if root.defaultUri != NS_COMPONENT:
            self.stream_error("invalid-namespace", "expected jabber:component:accept")
            return
        to = root.getAttribute("to") or ""
        j = jidlib.parse_or_none(to)
        domain = j.host if j is not None and j.user is None and j.resource is None else None
        if domain is None or domain not in self.service.secrets:
            log.info("component from {peer} asked for unknown domain {to!r}", peer=self.peer,
                     to=to[:100])
            self.stream_error("host-unknown")
            return
        self.domain = self.full = domain
        self.header_sent = True
        self.transport.write(
            ("<?xml version='1.0'?><stream:stream xmlns:stream='%s' xmlns='%s' from='%s' "
             "id='%s'>" % (NS_STREAMS, NS_COMPONENT, domish.escapeToXml(domain, 1), self.sid)
             ).encode())

    def on_element(self, el):
        if self.closing:
            return
        if el.uri == NS_STREAMS and el.name == "error":
            log.info("component {domain} sent a stream error: {err}", domain=self.domain,
                     err=el.toXml()[:500])
            self.close()
            return
        if not self.authenticated:
            self.on_handshake(el)
            return
        if self.trace:
            log.info("component {domain} IN {xml}", domain=self.domain, xml=for_trace(el.toXml()))
        name = el.name
        if el.uri != NS_COMPONENT or name not in STANZAS:
            self.stream_error("invalid-namespace" if name in STANZAS
                              else "unsupported-stanza-type")
            return
        attrs = el.attributes
        frm, to = attrs.get("from"), attrs.get("to")
        if not frm or not to:
            self.stream_error("improper-addressing", "stanzas need 'to' and 'from'")
            return
        j = jidlib.parse_or_none(frm)
        if j is None or j.host != self.domain:
            self.stream_error("invalid-from", f"'from' must be at {self.domain}")
            return
        rehome(el)
        try:
            if to == self.router.domain and name != "iq" and self.cfg.component_multicast_max:
                for c in el.elements():
                    if c.name == "addresses" and c.uri == NS_ADDRESS:
                        self.multicast(el, c)
                        return
            self.router.route(el)
        except Exception:
            log.failure("component {domain}: routing failed for {xml}", domain=self.domain,
                        xml=for_trace(el.toXml())[:2000])

    def multicast(self, el, addresses):
        """XEP-0033 bcc fan-out of ``el`` (see the module docstring)."""
        el.children.remove(addresses)
        router = self.router
        local, other = [], []
        for a in addresses.elements():
            if a.name != "address" or a.uri != NS_ADDRESS:
                continue
            jid = a.getAttribute("jid")
            j = jidlib.parse_or_none(jid) if jid and a.getAttribute("type") == "bcc" else None
            if j is None:     # only bcc to a JID is offered (§4.6: no uri/node/delivered)
                router.bounce(el, "bad-request", text="only bcc addresses with a jid")
                return
            (local if j.host == router.domain and j.resource is not None else other).append(j.full())
        if len(local) + len(other) > self.cfg.component_multicast_max:
            router.bounce(el, "not-acceptable", text="too many addresses")
            return
        if local:
            router.route_many(el, local)
        if other:
            el.attributes["to"] = "\x00"
            head, tail = to_bytes(el).split(b"\x00", 1)
            for jid in other:
                copy = generic.parseXml(b"<s xmlns='%s'>" % NS_COMPONENT.encode() + head
                                        + domish.escapeToXml(jid, 1).encode() + tail + b"</s>")
                copy = copy.firstChildElement()
                copy.parent = None
                rehome(copy)
                router.route(copy)

    def on_handshake(self, el):
        if el.name != "handshake" or el.uri != NS_COMPONENT:
            self.stream_error("not-authorized", "handshake first")
            return
        secret = self.service.secrets[self.domain]
        given = str(el).strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(given, handshake_digest(self.sid, secret).encode()):
            log.info("component {domain} from {peer}: wrong handshake", domain=self.domain,
                     peer=self.peer)
            self.stream_error("not-authorized")
            return
        if not self.service.attach(self):
            log.info("component {domain} from {peer}: already connected", domain=self.domain,
                     peer=self.peer)
            self.stream_error("conflict", "this component is already connected")
            return
        self.authenticated = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.stream.maxStanzaSize = self.cfg.max_stanza_size
        self.transport.write(b"<handshake/>")
        log.info("component {domain} connected from {peer}", domain=self.domain, peer=self.peer)

    # -- output (the router's side) --------------------------------------------

    def send(self, el):
        """Deliver one stanza to the component (the route ``router.routes[domain]``)."""
        if self.closing:
            return
        data = to_bytes(el)
        if self.trace:
            log.info("component {domain} OUT {xml}", domain=self.domain,
                     xml=for_trace(data.decode("utf-8", "replace")))
        self.transport.write(data)

    def stream_error(self, condition, text=None):
        if self.closing:
            return
        out = b""
        if not self.header_sent:
            self.header_sent = True
            out = ("<?xml version='1.0'?><stream:stream xmlns:stream='%s' xmlns='%s' id='%s'>"
                   % (NS_STREAMS, NS_COMPONENT, self.sid or secrets.token_hex(16))).encode()
        body = f"<{condition} xmlns='{NS_STREAM_ERRORS}'/>"
        if text:
            body += (f"<text xmlns='{NS_STREAM_ERRORS}' xml:lang='en'>"
                     f"{domish.escapeToXml(text)}</text>")
        self.transport.write(out + f"<stream:error>{body}</stream:error></stream:stream>".encode())
        log.info("component {domain} ({peer}): stream error {cond}", domain=self.domain,
                 peer=self.peer, cond=condition)
        self.closing = True
        self._lose()

    def close(self):
        if self.closing:
            return
        self.closing = True
        self.transport.write(b"</stream:stream>")
        self._lose()

    def _lose(self):
        self.transport.loseConnection()
        if self._close_timer is None:
            self._close_timer = reactor.callLater(CLOSE_GRACE, self.transport.abortConnection)


class ComponentFactory(protocol.ServerFactory):
    noisy = False

    def __init__(self, service):
        self.service = service

    def buildProtocol(self, addr):
        p = ComponentStream(self.service)
        p.factory = self
        return p


class ComponentService(service.Service):
    """The component listener, and the routes of the configured component domains."""

    def __init__(self, cfg, router):
        self.cfg = cfg
        self.router = router
        self.secrets = {c["domain"]: c["secret"] for c in cfg.components}
        self.connected = {}      # domain -> ComponentStream (listed in the server's disco#items)
        self.streams = set()
        self.exempt = limits.Exempt(cfg.limits_exempt)
        self.conn_limit = limits.ConnectionsPerIP(cfg.max_connections_per_ip)
        # a component that stops reading is closed like a client (max_send_buffer)
        self.send_guard = limits.SendBacklogGuard(self.streams, cfg.max_send_buffer)
        self.port = None
        router.components = self.connected
        if cfg.component_multicast_max:
            features = getattr(router, "component_features", None)
            if features is None:
                features = router.component_features = []
            features.append(NS_ADDRESS)
        for domain in self.secrets:
            router.routes[domain] = Offline(router, domain)

    def attach(self, stream):
        if stream.domain in self.connected:
            return False
        self.connected[stream.domain] = stream
        self.router.routes[stream.domain] = stream
        return True

    def detach(self, stream):
        if self.connected.get(stream.domain) is stream:
            del self.connected[stream.domain]
            self.router.routes[stream.domain] = Offline(self.router, stream.domain)

    def startService(self):
        super().startService()
        self.send_guard.start()
        self.port = reactor.listenTCP(self.cfg.component_port, ComponentFactory(self),
                                      interface=self.cfg.component_interface)
        log.info("component listening on {iface}:{port}", iface=self.cfg.component_interface,
                 port=self.port.getHost().port)

    def stopService(self):
        super().stopService()
        self.send_guard.stop()
        for s in list(self.streams):
            s.stream_error("system-shutdown")
        if self.port is not None:
            d = self.port.stopListening()
            self.port = None
            return d
