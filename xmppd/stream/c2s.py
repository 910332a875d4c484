"""Client-to-server streams (RFC 6120): negotiation, then the stanza hot path.

One :class:`C2SStream` per TCP connection. It is also the *session* the
router delivers to once a resource is bound (``full``, ``bare``,
``available``, ``priority``, ``deliver``...), so delivery is one dict lookup
and one transport write.

Negotiation (:class:`C2SAuthenticator`): header -> features -> STARTTLS ->
restart -> SASL (:mod:`xmppd.auth` runs the mechanisms) -> restart -> bind
(+ optional session). Elements are
dispatched by (namespace, name) through dicts, never through xpath
observers, and the parser is hardened against DTDs, entities, comments,
processing instructions and oversized stanzas (RFC 6120 §11.1).
"""
import base64
import itertools
import re
import secrets

from twisted.application import service
from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import resourceprep
from twisted.words.xish import domish

from xmppd.jid import parse_or_none
from xmppd.router import NS_CLIENT, SUBSCRIPTION_TYPES, error_reply, result_reply
from xmppd.auth.sasl import NS_SASL, AuthService, SASLFailure
from xmppd.stream import limits
from xmppd.stream.redact import redact
from xmppd.stream import tls as tlsmod
from xmppd.stream.serialize import to_bytes

log = Logger(namespace="xmppd.c2s")

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
XML_LANG = ("http://www.w3.org/XML/1998/namespace", "lang")

MAX_SASL_FAILURES = 3
MAX_DIRECTED = 1000  # entities one session may send directed presence to (bounded memory)
CLOSE_GRACE = 10  # seconds a closing peer gets to finish the TLS shutdown
_LANG_RE = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")

# Pre-serialised protocol snippets (sent verbatim, never built per stream).
_STARTTLS = "<starttls xmlns='%s'/>" % NS_TLS
_STARTTLS_REQUIRED = "<starttls xmlns='%s'><required/></starttls>" % NS_TLS
_BIND_FEATURES = (b"<stream:features><bind xmlns='" + NS_BIND.encode() + b"'/>"
                  b"<session xmlns='" + NS_SESSION.encode() + b"'><optional/></session>"
                  b"</stream:features>")
_PROCEED = ("<proceed xmlns='%s'/>" % NS_TLS).encode()
_TLS_FAILURE = ("<failure xmlns='%s'/>" % NS_TLS).encode()
_SUCCESS = ("<success xmlns='%s'/>" % NS_SASL).encode()
_CHALLENGE = ("<challenge xmlns='%s'/>" % NS_SASL).encode()
_SUCCESS_DATA = "<success xmlns='%s'>%%s</success>" % NS_SASL
_CHALLENGE_DATA = "<challenge xmlns='%s'>%%s</challenge>" % NS_SASL
_FOOTER = b"</stream:stream>"


def _features(starttls, required, mechanisms):
    parts = []
    if starttls:
        parts.append(_STARTTLS_REQUIRED if required else _STARTTLS)
    if mechanisms:
        parts.append(mechanisms)
    return ("<stream:features>%s</stream:features>" % "".join(parts)).encode()


def _sasl_failure(condition):
    return f"<failure xmlns='{NS_SASL}'><{condition}/></failure>".encode()


def _reject_restricted(*args):
    raise domish.ParserError("restricted-xml")


def _redact(el):
    """Trace form of a pre-auth element: SASL payloads carry credentials."""
    if el.uri == NS_SASL and el.name in ("auth", "response"):
        mech = el.getAttribute("mechanism")
        return f"<{el.name} xmlns='{NS_SASL}'{' mechanism=%r' % mech if mech else ''}>[redacted]</{el.name}>"
    return el.toXml()


class C2SAuthenticator(xmlstream.ListenAuthenticator):
    """Stream negotiation state machine for one client connection."""

    def __init__(self, service):
        super().__init__()
        self.service = service
        self.cfg = service.cfg
        self.tls = False
        self.username = None
        self.exchange = None        # xmppd.auth.sasl.Exchange, once the client sends <auth/>
        self.verifying = False      # a SASL step (e.g. a password check in a thread) runs
        self.failures = 0

    # -- stream header ------------------------------------------------------

    def streamStarted(self, root):
        xs = self.xmlstream
        xs.sid = secrets.token_hex(8)
        lang = root.attributes.get(XML_LANG)
        if lang and _LANG_RE.match(lang):
            xs.lang = lang
            xs.stanza_lang = lang   # RFC 6120 §4.7.4: the default for stanzas without xml:lang
        if root.name != "stream":
            xs.streamError("bad-format")
            return
        if root.uri != NS_STREAMS:
            xs.streamError("invalid-namespace")
            return
        if root.defaultUri != NS_CLIENT:
            xs.streamError("invalid-namespace")
            return
        to = root.attributes.get("to")
        if to is not None:
            j = parse_or_none(to)
            if j is None or j.user is not None or j.resource is not None or j.host != self.cfg.domain:
                xs.streamError("host-unknown")
                return
        version = root.attributes.get("version", "")
        major = version.split(".", 1)[0]
        if not major.isdigit() or int(major) != 1 or "." not in version \
                or not version.split(".", 1)[1].isdigit():
            xs.streamError("unsupported-version")
            return
        xs.sendHeader()
        xs.write(self.features())

    def tls_conn(self):
        """The OpenSSL connection under this stream (channel binding), None before TLS."""
        return self.xmlstream.transport.getHandle() if self.tls else None

    def features(self):
        if self.username is not None:
            return _BIND_FEATURES
        return self.service.features_for(self.tls, self.tls_conn())

    # -- elements before the resource is bound --------------------------------

    def handle(self, el):
        xs = self.xmlstream
        uri, name = el.uri, el.name
        if self.verifying:
            xs.streamError("policy-violation", "pipelined data during authentication")
            return
        if self.username is None:
            if uri == NS_TLS and name == "starttls":
                self.onStartTLS()
            elif uri == NS_SASL:
                if name == "auth":
                    self.onAuth(el)
                elif name == "response" and self.exchange is not None:
                    self.step(self.exchange.respond(str(el)))
                elif name == "abort":
                    if self.exchange is not None:
                        self.exchange.abort()
                    self.failed("aborted")
                else:
                    self.failed("malformed-request")
            elif (uri == NS_CLIENT and name == "iq" and self.service.registration is not None
                    and self.service.registration.wants(el)):
                self.onRegister(el)
            elif uri == NS_CLIENT:
                xs.streamError("not-authorized")
            else:
                xs.streamError("unsupported-stanza-type")
            return
        if uri == NS_CLIENT and name == "iq":
            bind = None
            for child in el.elements():
                bind = child
                break
            if (bind is not None and bind.uri == NS_BIND and bind.name == "bind"
                    and el.attributes.get("type") == "set"):
                self.onBind(el, bind)
                return
            xs.streamError("not-authorized", "bind a resource first")
            return
        if uri == NS_CLIENT:
            xs.streamError("not-authorized", "bind a resource first")
        else:
            xs.streamError("unsupported-stanza-type")

    def onStartTLS(self):
        xs = self.xmlstream
        if self.tls:
            xs.write(_TLS_FAILURE)
            xs.close()
            return
        xs.write(_PROCEED)
        xs.transport.startTLS(self.service.tls_factory)
        self.tls = True
        self.exchange = None        # mechanisms and channel bindings change with TLS
        xs.reset()

    def onAuth(self, el):
        xs = self.xmlstream
        if not self.tls and self.service.encryption_required:
            self.failed("encryption-required")
            return
        if self.exchange is None:
            self.exchange = self.service.auth.exchange(self.tls_conn(), xs.limited_ip)
        self.step(self.exchange.start(el.attributes.get("mechanism"), str(el)))

    def onRegister(self, iq):
        """XEP-0077 §3.1 before authentication (xmppd.services.register answers)."""
        xs = self.xmlstream
        if "id" not in iq.attributes:
            xs.streamError("bad-format", "iq without id")
            return
        self.service.registration.preauth(iq, xs.limited_ip, self.tls,
                                          self.service.encryption_required, xs.write_element)

    def step(self, d):
        """Wait for one SASL step of :mod:`xmppd.auth`; refuse pipelined data meanwhile."""
        self.verifying = True
        d.addCallbacks(self._stepDone, self._stepFailed)
        d.addErrback(self._stepError)

    def _stepDone(self, result):
        self.verifying = False
        xs = self.xmlstream
        if xs.closing:
            return
        if result[0] == "challenge":
            data = result[1]
            xs.write((_CHALLENGE_DATA % base64.b64encode(data).decode()).encode() if data
                     else _CHALLENGE)
            return
        _, data, username = result
        self.exchange.succeeded(username)
        self.username = username
        xs.write((_SUCCESS_DATA % base64.b64encode(data).decode()).encode() if data else _SUCCESS)
        xs.reset()

    def _stepFailed(self, failure):
        failure.trap(SASLFailure)
        self.verifying = False
        if self.xmlstream.closing:
            return
        delay = self.exchange.failure_delay(failure.value) if self.exchange else 0
        if delay > 0:
            self.verifying = True       # pipelined data while we wait is still refused
            reactor.callLater(delay, self._failLater, failure.value.condition)
        else:
            self.failed(failure.value.condition)

    def _failLater(self, condition):
        self.verifying = False
        if not self.xmlstream.closing:
            self.failed(condition)

    def _stepError(self, failure):
        self.verifying = False
        log.failure("c2s {cid}: authentication step failed", failure, cid=self.xmlstream.cid)
        if not self.xmlstream.closing:
            self.failed("temporary-auth-failure")

    def failed(self, condition):
        xs = self.xmlstream
        xs.write(_sasl_failure(condition))
        if condition in ("aborted", "encryption-required", "invalid-mechanism"):
            return
        self.failures += 1
        if self.failures >= MAX_SASL_FAILURES:
            xs.streamError("policy-violation", "too many failed authentication attempts")

    def onBind(self, iq, bind):
        xs = self.xmlstream
        svc = self.service
        if "id" not in iq.attributes:
            xs.streamError("bad-format", "iq without id")
            return
        requested = None
        for child in bind.elements():
            if child.name == "resource":
                requested = str(child).strip()
        if requested:
            try:
                resource = resourceprep.prepare(requested)
            except UnicodeError:
                resource = ""
            if not resource or len(resource.encode("utf-8")) > 1023:
                xs.write_element(error_reply(iq, "bad-request", text="invalid resource"))
                return
        else:
            resource = "xmppd-" + secrets.token_hex(6)
        bare = f"{self.username}@{self.cfg.domain}"
        sessions = svc.router.sessions
        existing = sessions.resources(bare)
        if (len(existing) >= self.cfg.max_resources_per_account
                and resource not in existing):
            xs.write_element(error_reply(iq, "resource-constraint", text="too many resources"))
            return
        xs.bindSession(self.username, bare, resource)
        reply = result_reply(iq, None, sender=False)
        reply.attributes.pop("to", None)
        b = reply.addElement((NS_BIND, "bind"))
        b.addElement("jid", content=xs.full)
        xs.write_element(reply)


class C2SStream(xmlstream.XmlStream):
    """One client connection, and its session once a resource is bound."""

    _ids = itertools.count(1)

    def __init__(self, service, direct_tls=False):
        self.service = service
        self.router = service.router
        self.cfg = service.cfg
        self.trace = service.cfg.trace
        self.cid = "c%d" % next(self._ids)
        self.lang = "en"
        self.stanza_lang = None     # the client's declared stream language, if any
        self.closing = False
        self.bound = False
        self.peer = "?"
        # Session state (meaningful once bound).
        self.username = self.full = self.bare = self.resource = None
        self.full_escaped = b""
        self.available = False
        self.priority = 0
        self.last_presence = None   # last undirected available presence (sent to new own resources)
        self.directed = {}          # key -> 'to' of directed available presence
        self._timer = None
        self._idleTimer = None
        self._closeTimer = None
        self._last = 0.0
        self.limited_ip = None      # peer address when per-IP limits apply to it
        self._ipCounted = False
        self._rate = None           # limits.ReadRate
        self._handlers = {"message": self.onMessage, "presence": self.onPresence,
                          "iq": self.onIq}
        super().__init__(C2SAuthenticator(service))
        self.authenticator.tls = direct_tls     # XEP-0368: TLS from the first byte

    # -- transport events -----------------------------------------------------

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self._initializeStream()
        host = getattr(peer, "host", None)
        svc = self.service
        if host is not None and host not in svc.exempt:
            self.limited_ip = host
            if not svc.conn_limit.acquire(host):
                self.streamError("policy-violation", "too many connections from your address")
                return
            self._ipCounted = True
            if self.cfg.read_rate_limit:
                self._rate = limits.ReadRate(self, self.cfg.read_rate_limit)
        self.service.streams.add(self)
        self._last = reactor.seconds()
        if self.cfg.preauth_timeout > 0:
            self._timer = reactor.callLater(self.cfg.preauth_timeout, self._timeout, "pre-auth")
        if self.cfg.idle_timeout > 0:
            self._idleTimer = reactor.callLater(self.cfg.idle_timeout, self._idleCheck)
        log.info("c2s {cid}: connection opened from {peer}", cid=self.cid, peer=self.peer)

    def _initializeStream(self):
        """A fresh hardened parser (called on connect and on every stream restart)."""
        self.stream = stream = domish.elementStream()
        stream.DocumentStartEvent = self.onDocumentStart
        stream.ElementEvent = self.onElement
        stream.DocumentEndEvent = self.onDocumentEnd
        p = stream.parser
        p.buffer_text = True          # O(n) character data instead of O(n^2)
        p.buffer_size = 8192          # allocated per parser: 64 KiB would cost 56 KiB per session
        p.StartDoctypeDeclHandler = _reject_restricted
        p.EntityDeclHandler = _reject_restricted
        p.CommentHandler = _reject_restricted
        p.ProcessingInstructionHandler = _reject_restricted
        stream.maxStanzaSize = self.cfg.max_stanza_size if self.bound else self.cfg.max_preauth_size
        stream.maxElementCount = 10000
        limits.limit_depth(stream)    # deep trees would overflow the recursion limit later

    def dataReceived(self, data):
        if self.closing:
            return
        self._last = reactor.seconds()
        if self._rate is not None:
            data = self._rate.admit(data)   # beyond the read rate: held back, reading paused
            if not data:
                return
        try:
            if len(data) > limits.PARSE_CHUNK:
                limits.parse(self, data)     # the size limit also holds within one read
            else:
                self.stream.parse(data)
        except domish.ParserError as e:
            msg = str(e)
            if "restricted-xml" in msg:
                self.streamError("restricted-xml")
            elif "Maximum" in msg:
                self.streamError("policy-violation", "stanza too large")
            elif self.sid is None and data[:1] == b"\x16" and not self.authenticator.tls:
                # A TLS ClientHello (record type 22) on the STARTTLS port: a client
                # trying Direct TLS (XEP-0368) here. Say where to go, in one line.
                port = self.service.direct_tls_port
                self.streamError("not-well-formed", "TLS handshake on the STARTTLS port; " + (
                    f"Direct TLS is on port {port}" if port else "Direct TLS is not enabled here"))
            else:
                self.streamError("not-well-formed")
        except Exception:
            log.failure("c2s {cid}: unexpected error while parsing", cid=self.cid)
            self.streamError("internal-server-error")

    def connectionLost(self, reason):
        self.closing = True
        if self._ipCounted:
            self._ipCounted = False
            self.service.conn_limit.release(self.limited_ip)
        if self._rate is not None:
            self._rate.stop()
            self._rate = None
        self.service.streams.discard(self)
        for t in (self._timer, self._idleTimer, self._closeTimer):
            if t is not None and t.active():
                t.cancel()
        self._timer = self._idleTimer = self._closeTimer = None
        if self.bound:
            self.bound = False
            self.router.sessions.remove(self)
            try:
                self._leaving()
            except Exception:
                log.failure("c2s {cid}: announcing the end of {jid} failed", cid=self.cid,
                            jid=self.full)
        log.info("c2s {cid}: connection closed ({who})", cid=self.cid,
                 who=self.full or "unauthenticated")
        self.stream = None
        self.authenticator = None   # break the reference cycle
        self._handlers = None

    def _timeout(self, what):
        self._timer = None
        if not self.bound and not self.closing:
            log.info("c2s {cid}: {what} timeout", cid=self.cid, what=what)
            self.streamError("connection-timeout")

    def _idleCheck(self):
        self._idleTimer = None
        if self.closing:
            return
        idle = reactor.seconds() - self._last
        limit = self.cfg.idle_timeout
        if idle >= limit:
            log.info("c2s {cid}: idle timeout", cid=self.cid)
            self.streamError("connection-timeout")
        else:
            self._idleTimer = reactor.callLater(limit - idle, self._idleCheck)

    # -- parser events --------------------------------------------------------

    def onDocumentStart(self, root):
        if self.closing:
            return
        self.authenticator.streamStarted(root)

    def onDocumentEnd(self):
        self.close()

    def onElement(self, el):
        if self.closing:
            return
        if el.uri == NS_STREAMS and el.name == "error":
            log.info("c2s {cid}: client sent a stream error: {err}", cid=self.cid, err=el.toXml())
            self.close()
            return
        if not self.bound:
            if self.trace:
                log.info("c2s {cid} IN {xml}", cid=self.cid, xml=redact(_redact(el)))
            self.authenticator.handle(el)
            return
        if self.trace:
            log.info("c2s {cid} {jid} IN {xml}", cid=self.cid, jid=self.full,
                     xml=redact(el.toXml()))
        if el.uri != NS_CLIENT:
            # A stanza in another content namespace (e.g. jabber:server) is
            # invalid-namespace (RFC 6120 §4.9.3.10); anything else unknown is
            # unsupported-stanza-type (we offer no stream management etc.).
            self.streamError("invalid-namespace" if el.name in self._handlers
                             else "unsupported-stanza-type")
            return
        handler = self._handlers.get(el.name)
        if handler is None:
            self.streamError("unsupported-stanza-type")
            return
        try:
            handler(el)
        except Exception:
            log.failure("c2s {cid} {jid}: error handling {xml}", cid=self.cid, jid=self.full,
                        xml=redact(el.toXml())[:2000])
            if el.name == "iq" and el.attributes.get("type") in ("get", "set"):
                reply = error_reply(el, "internal-server-error")
                reply.attributes["to"] = self.full
                self.deliver(reply)

    # -- output ---------------------------------------------------------------

    def sendHeader(self):
        self.write(("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                    "xmlns:stream='http://etherx.jabber.org/streams' id='%s' from='%s' "
                    "version='1.0' xml:lang='%s'>"
                    % (self.sid, domish.escapeToXml(self.cfg.domain, 1), self.lang)).encode())
        self._headerSent = True

    def write(self, data):
        if self.trace and self.bound is False:
            log.info("c2s {cid} OUT {xml}", cid=self.cid,
                     xml=redact(data.decode("utf-8", "replace")))
        self.transport.write(data)

    def write_element(self, el):
        self.write_stanza(to_bytes(el))

    def streamError(self, condition, text=None):
        """Send a stream error (after our header if needed), the footer, and close."""
        if self.closing:
            return
        if not self._headerSent:
            if self.sid is None:
                self.sid = secrets.token_hex(8)
            self.sendHeader()
        body = f"<{condition} xmlns='{NS_STREAM_ERRORS}'/>"
        if text:
            body += (f"<text xmlns='{NS_STREAM_ERRORS}' xml:lang='en'>"
                     f"{domish.escapeToXml(text)}</text>")
        data = f"<stream:error>{body}</stream:error>".encode() + _FOOTER
        if self.trace:
            log.info("c2s {cid} OUT {xml}", cid=self.cid, xml=data.decode())
        self.transport.write(data)
        if condition not in ("system-shutdown", "conflict", "connection-timeout"):
            log.info("c2s {cid}: stream error {cond}{text} ({who})", cid=self.cid,
                     cond=condition, text=f": {text}" if text else "",
                     who=self.full or self.peer)
        self.closing = True
        self._loseConnection()

    def close(self):
        """Close our side of the stream cleanly."""
        if self.closing:
            return
        self.closing = True
        if not self._headerSent:
            if self.sid is None:
                self.sid = secrets.token_hex(8)
            self.sendHeader()
        self.transport.write(_FOOTER)
        self._loseConnection()

    def _loseConnection(self):
        # A TLS peer that never answers close_notify would keep the socket
        # forever; abort it after a grace period.
        self.transport.loseConnection()
        if self._closeTimer is None:
            self._closeTimer = reactor.callLater(CLOSE_GRACE, self._abort)

    def _abort(self):
        self._closeTimer = None
        self.transport.abortConnection()

    # Session interface used by the router.

    def deliver(self, el):
        if self.closing:
            return      # nothing may follow </stream:stream> (late replies, e.g. after storage)
        data = to_bytes(el)
        if self.trace:
            log.info("c2s {cid} {jid} OUT {xml}", cid=self.cid, jid=self.full,
                     xml=redact(data.decode()))
        self.transport.write(data)

    def write_stanza(self, data):
        if self.closing:
            return
        if self.trace:
            log.info("c2s {cid} {jid} OUT {xml}", cid=self.cid, jid=self.full,
                     xml=redact(data.decode("utf-8", "replace")))
        self.transport.write(data)

    def write_patched(self, head, tail):
        self.write_stanza(head + self.full_escaped + tail)

    # -- session --------------------------------------------------------------

    def bindSession(self, username, bare, resource):
        self.username = username
        self.bare = bare
        self.resource = resource
        self.full = f"{bare}/{resource}"
        self.full_escaped = domish.escapeToXml(self.full, 1).encode("utf-8")
        old = self.router.sessions.add(self)
        self.bound = True
        self.stream.maxStanzaSize = self.cfg.max_stanza_size
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if old is not None and old is not self:
            log.info("c2s {cid}: {jid} replaced by a new session {new}", cid=old.cid,
                     jid=old.full, new=self.cid)
            old.replaced()
        exchange = self.authenticator.exchange
        log.info("c2s {cid}: authenticated as {jid} ({mech})", cid=self.cid, jid=self.full,
                 mech=exchange.used if exchange is not None else "?")

    def replaced(self):
        """Another stream bound our full JID: leave with a conflict stream error."""
        if self.bound:
            self.bound = False
            self._leaving()
        self.streamError("conflict", "replaced by a new session")

    def _broadcastToOwnResources(self, el, include_self):
        targets = [s for s in self.router.sessions.resources(self.bare).values()
                   if s.available and (include_self or s is not self)]
        if targets:
            self._sendPatched(el, targets)

    @staticmethod
    def _sendPatched(el, targets):
        """Serialise ``el`` once and send it to each target session with its own 'to'."""
        attrs = el.attributes
        saved = attrs.get("to")
        attrs["to"] = "\x00"
        data = to_bytes(el)
        if saved is None:
            del attrs["to"]
        else:
            attrs["to"] = saved
        head, tail = data.split(b"\x00", 1)
        for s in targets:
            s.write_patched(head, tail)

    def _leaving(self):
        """The session ends: own resources and directed-presence targets see it go."""
        if self.available:
            self.available = False
            self.last_presence = None
            p = domish.Element((None, "presence"))
            p["from"] = self.full
            p["type"] = "unavailable"
            self._broadcastToOwnResources(p, False)
        self._sendDirectedUnavailable()

    def _sendDirectedUnavailable(self, status=None):
        """Tell everyone we sent directed presence to that we are gone (fresh element each)."""
        directed, self.directed = self.directed, {}
        route = self.router.route
        for to in directed.values():
            p = domish.Element((None, "presence"))
            p["from"] = self.full
            p["to"] = to
            p["type"] = "unavailable"
            if status:
                p.addElement("status", content=status)
            try:
                route(p)
            except Exception:
                log.failure("c2s {cid}: unavailable presence to {to} failed", cid=self.cid, to=to)

    def _directedKey(self, j):
        # Components (MUC rooms) are tracked per bare JID so a nick change
        # leaves one entry; users per full JID.
        return j.userhost() if j.host in self.router.routes else j.full()

    # -- stanzas from the client ------------------------------------------------

    def onMessage(self, el):
        attrs = el.attributes
        attrs["from"] = self.full
        if self.stanza_lang is not None and XML_LANG not in attrs:
            attrs[XML_LANG] = self.stanza_lang
        if not attrs.get("to"):
            attrs["to"] = self.bare
        if self.router.from_client(el, self):
            return
        self.router.route(el)

    def onPresence(self, el):
        attrs = el.attributes
        attrs["from"] = self.full
        if self.stanza_lang is not None and XML_LANG not in attrs:
            attrs[XML_LANG] = self.stanza_lang
        if self.router.from_client(el, self):
            return
        to = attrs.get("to")
        t = attrs.get("type")
        if not to:
            # Undirected presence. No rosters, so the only subscriber is the
            # account itself (RFC 6121 §4.2.2, §4.4.2, §4.5.2: own resources).
            if t is None:
                initial = not self.available
                offline_due = not (self.available and self.priority >= 0)  # XEP-0160
                self.available = True
                prio = el.priority
                p = 0
                if prio is not None:
                    try:
                        p = int(str(prio).strip())
                    except ValueError:
                        pass
                self.priority = max(-128, min(127, p))
                self.last_presence = el
                self._broadcastToOwnResources(el, True)
                if initial:
                    for other in self.router.sessions.resources(self.bare).values():
                        if other is not self and other.available and other.last_presence is not None:
                            self._sendPatched(other.last_presence, (self,))
                if offline_due and self.router.offline is not None:
                    self.router.offline.deliver(self)  # XEP-0160: stored messages now
            elif t == "unavailable":
                was_available = self.available
                self.available = False
                self.last_presence = None
                if was_available:
                    self._broadcastToOwnResources(el, False)
                if self.directed:
                    # RFC 6121 §4.6.3: entities that got directed presence learn we left.
                    status = el.status
                    self._sendDirectedUnavailable(str(status) if status is not None else None)
            return
        j = parse_or_none(to)
        if j is None:
            if t != "error":
                reply = error_reply(el, "jid-malformed", sender=self.cfg.domain)
                self.deliver(reply)
            return
        if t is None:
            key = self._directedKey(j)
            if key not in self.directed and len(self.directed) >= MAX_DIRECTED:
                self.deliver(error_reply(el, "resource-constraint", sender=self.cfg.domain,
                                         text="too many directed presences"))
                return
            self.directed[key] = to
        elif t == "unavailable":
            self.directed.pop(self._directedKey(j), None)
        elif t in SUBSCRIPTION_TYPES:
            attrs["from"] = self.bare   # RFC 6121 §3.1.2: subscriptions come from the bare JID
        self.router.route(el)

    def onIq(self, el):
        attrs = el.attributes
        attrs["from"] = self.full
        t = attrs.get("type")
        if "id" not in attrs or t not in ("get", "set", "result", "error"):
            self.streamError("bad-format", "iq needs an id and a valid type")
            return
        if self.router.from_client(el, self):
            return
        if not attrs.get("to"):
            if t == "get" or t == "set":
                self.router.handle_iq(el, self.bare, reply_from=False)
            return
        self.router.route(el)


class C2SFactory(protocol.ServerFactory):
    noisy = False
    def __init__(self, service, direct_tls=False):
        self.service = service
        self.direct_tls = direct_tls

    def buildProtocol(self, addr):
        xs = C2SStream(self.service, self.direct_tls)
        xs.factory = self
        return xs


class C2SService(service.Service):
    """Listens for clients; owns the shared TLS context and the set of live streams."""

    def __init__(self, cfg, router, store):
        self.cfg = cfg
        self.router = router
        self.store = store
        self.tls_factory = tlsmod.context_factory(cfg)   # ConfigError early, before listening
        self.encryption_required = cfg.encryption_required
        self.auth_throttle = limits.AuthThrottle(cfg.max_auth_failures_per_account,
                                                 cfg.max_auth_failures_per_ip,
                                                 cfg.auth_failure_window)
        self.auth = AuthService(cfg, store.accounts, self.auth_throttle)
        self.registration = getattr(router, "registration", None)   # XEP-0077, when allowed
        self._features = {}   # (tls done, mechanisms offered) -> features bytes before authentication
        self.streams = set()
        self.port = None
        self.factory = C2SFactory(self)
        # XEP-0368 Direct TLS: a second listener, its own context (ALPN xmpp-client).
        self.direct_tls_port = None
        self.direct_port = None
        self.direct_tls_factory = (tlsmod.context_factory(cfg, b"xmpp-client")
                                   if cfg.c2s_direct_tls_port >= 0 else None)
        self.exempt = limits.Exempt(cfg.limits_exempt)
        self.conn_limit = limits.ConnectionsPerIP(cfg.max_connections_per_ip)
        self.send_guard = limits.SendBacklogGuard(self.streams, cfg.max_send_buffer)

    def features_for(self, tls, tls_conn):
        """Stream features before authentication (cached: a few variants per server)."""
        if not tls and self.encryption_required:
            key = (False, None)
        else:
            key = (tls, self.auth.offer(tls_conn))
        data = self._features.get(key)
        if data is None:
            mechanisms = key[1] and self.auth.features(tls_conn)
            if mechanisms and self.registration is not None:
                from xmppd.services.register import FEATURE
                mechanisms += FEATURE
            data = self._features[key] = _features(not tls, self.encryption_required, mechanisms)
        return data

    def startService(self):
        super().startService()
        self.auth.start()
        self.send_guard.start()
        if self.cfg.insecure_auth:
            log.warn("*" * 72)
            log.warn("INSECURE AUTH: any username/password logs in and accounts are created on "
                     "first login. Development only, never expose this server.")
            log.warn("*" * 72)
        if not self.cfg.tls_cert:
            log.info("c2s TLS certificate: {path}", path=self.tls_factory.cert_path)
        self.port = reactor.listenTCP(self.cfg.c2s_port, self.factory,
                                      interface=self.cfg.interface)
        if self.direct_tls_factory is not None:
            self.direct_port = reactor.listenSSL(self.cfg.c2s_direct_tls_port,
                                                 C2SFactory(self, direct_tls=True),
                                                 self.direct_tls_factory, interface=self.cfg.interface)
            self.direct_tls_port = self.direct_port.getHost().port
            log.info("c2s direct TLS listening on {iface}:{port}", iface=self.cfg.interface,
                     port=self.direct_tls_port)
        host = self.port.getHost()
        log.info("c2s listening on {iface}:{port}", iface=self.cfg.interface, port=host.port)

    def stopService(self):
        super().stopService()
        self.send_guard.stop()
        for xs in list(self.streams):
            xs.streamError("system-shutdown")
        self.auth.stop()
        ds = [p.stopListening() for p in (self.port, self.direct_port) if p is not None]
        self.port = self.direct_port = None
        if ds:
            return defer.DeferredList(ds)
