"""One client session: a bound resource, whatever transport carries it.

A :class:`Session` is created by a transport (TCP stream, WebSocket, BOSH)
for each new client connection. It negotiates the stream (features ->
STARTTLS offer when the transport can -> SASL -> bind, in
:mod:`xmppd.session.negotiation` and :mod:`xmppd.session.sasl`), then is
the object the router delivers to: ``full``, ``bare``, ``available``,
``priority``, ``deliver()``, ``write_stanza()``, ``write_patched()``. It
tracks presence and directed presence and announces its end.

It knows nothing of sockets. It talks to its transport through the small
interface in :mod:`xmppd.transports` (``send``, ``open_stream``,
``close``, ``close_with_error``, ``abort``, ``start_tls``, ``restart``,
``session_bound``, ``secure``, ``peer``, ``tls_connection()``...). A
session can outlive its transport: :meth:`Session.detach` leaves it bound
with ``transport`` None (a ``transport-lost`` handler asked to keep it,
e.g. XEP-0198), :meth:`Session.attach` hands it a new transport, and
:meth:`Session.end` finishes it. Features hook the named events of
:mod:`xmppd.session.events`.
"""
import itertools

from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.jid import parse_or_none
from xmppd.metrics import STATS
from xmppd.router import SUBSCRIPTION_TYPES
from xmppd.session.negotiation import Negotiation
from xmppd.wire import NS_CLIENT, NS_STREAMS, XML_LANG
from xmppd.wire.errors import error_reply
from xmppd.wire.redact import for_trace
from xmppd.wire.serialize import patchable, to_bytes

log = Logger(namespace="xmppd.c2s")

MAX_DIRECTED = 1000  # entities one session may send directed presence to (bounded memory)


class Session(Negotiation):
    """One client session (see the module docstring)."""

    _ids = itertools.count(1)

    def __init__(self, manager, transport):
        self.manager = manager
        self.router = manager.router
        self.cfg = manager.cfg
        self.events = manager.events
        self.trace = manager.cfg.trace
        self.cid = "c%d" % next(self._ids)
        self.transport = transport
        self.stanza_lang = None     # the client's declared stream language, if any
        self.bound = False
        self.ended = False
        # Session state (meaningful once bound).
        self.username = self.full = self.bare = self.resource = None
        self.full_escaped = b""
        self.available = False
        self.priority = 0
        self.last_presence = None   # last undirected available presence (sent to new own resources)
        self.directed = {}          # key -> 'to' of directed available presence
        self._handlers = {"message": self.onMessage, "presence": self.onPresence,
                          "iq": self.onIq}
        Negotiation.__init__(self)
        manager.sessions.add(self)
        if manager.events.has("session-started"):
            manager.events.fire("session-started", self)

    def __repr__(self):
        return f"<Session {self.cid} {self.full or 'unbound'}>"

    @property
    def authenticated(self):
        return self.username is not None

    @property
    def peer(self):
        """The client's "host:port" (None while detached)."""
        t = self.transport
        return t.peer if t is not None else None

    def who(self):
        if self.full:
            return self.full
        t = self.transport
        return t.peer if t is not None else "?"

    # -- transport attachment (XEP-0198 resumption moves a session) ------------

    def attach(self, transport):
        """Carry on over ``transport`` (which drops the session it had)."""
        self.transport = transport
        transport.set_session(self)

    def detach(self):
        """Forget the transport; the session stays bound (output goes to ``stanza-sending``)."""
        self.transport = None

    def transport_lost(self, reason):
        """Called by the transport once its connection is gone."""
        if self.bound and not self.ended and self.events.fire("transport-lost", self, reason):
            self.detach()
            return
        self.transport = None
        self.end()

    def stream_closing(self):
        """The transport closed our side of the stream: nothing more reaches the client.

        The session ends now rather than when the connection is gone (a TLS
        peer may take up to CLOSE_GRACE to answer our close): its resource
        leaves the routing table, so stanzas for it are handled as for an
        unavailable resource (RFC 6121 §8.5.3.2: another resource, offline
        storage or an error) instead of being dropped, and XEP-0198's unacked
        stanzas are rerouted before anything that arrives after them.
        ``transport-lost`` fires first with ``"closed"`` (as it would when the
        connection ends), so features hand over what they hold (CSI to SM);
        a closed stream is never kept detached, whatever the handlers answer.
        """
        if self.bound and not self.ended:
            self.events.fire("transport-lost", self, "closed")
            self.end()

    def end(self):
        """The session is over: leave the router, announce unavailability, forget it."""
        if self.ended:
            return
        self.ended = True
        self.manager.sessions.discard(self)
        self.sasl.stop()
        if self.bound:
            self.bound = False
            self.router.sessions.remove(self)
            try:
                self._leaving()
            except Exception:
                log.failure("c2s {cid}: announcing the end of {jid} failed", cid=self.cid,
                            jid=self.full)
            self.events.fire("session-unbound", self)
        self._handlers = None

    def close_with_error(self, condition, text=None, app=None):
        """Close the stream with a stream error (or just end a detached session)."""
        t = self.transport
        if t is not None:
            t.close_with_error(condition, text, app)
        elif not self.ended:
            self.end()

    def close(self):
        t = self.transport
        if t is not None:
            t.close()
        elif not self.ended:
            self.end()

    # -- input from the transport's parser ---------------------------------------

    def element_received(self, el):
        t = self.transport
        if t is None or t.closing:
            return
        if el.uri == NS_STREAMS and el.name == "error":
            log.info("c2s {cid}: client sent a stream error: {err}", cid=self.cid, err=el.toXml())
            t.close()
            return
        if not self.bound:
            if self.trace:
                log.info("c2s {cid} IN {xml}", cid=self.cid, xml=for_trace(self.sasl.redacted(el)))
            self.negotiate(el)
            return
        if self.trace:
            log.info("c2s {cid} {jid} IN {xml}", cid=self.cid, jid=self.full,
                     xml=for_trace(el.toXml()))
        if el.uri != NS_CLIENT:
            if self.events.fire("nonza-received", self, el):
                return
            # A stanza in another content namespace (e.g. jabber:server) is
            # invalid-namespace (RFC 6120 §4.9.3.10); anything else unknown is
            # unsupported-stanza-type.
            t.close_with_error("invalid-namespace" if el.name in self._handlers
                               else "unsupported-stanza-type")
            return
        handler = self._handlers.get(el.name)
        if handler is None:
            t.close_with_error("unsupported-stanza-type")
            return
        STATS.stanzas_in[el.name] += 1
        hooks = self.events.stanza_received
        try:
            if hooks:
                for fn in hooks:
                    if fn(self, el):
                        return
            handler(el)
        except Exception:
            log.failure("c2s {cid} {jid}: error handling {xml}", cid=self.cid, jid=self.full,
                        xml=for_trace(el.toXml())[:2000])
            if el.name == "iq" and el.attributes.get("type") in ("get", "set"):
                reply = error_reply(el, "internal-server-error")
                reply.attributes["to"] = self.full
                self.deliver(reply)

    # -- output ---------------------------------------------------------------

    def send(self, data):
        """Write negotiation bytes (features, SASL, TLS) to the client; no hooks."""
        t = self.transport
        if t is None or t.closing:
            return
        if self.trace and self.bound is False:
            log.info("c2s {cid} OUT {xml}", cid=self.cid, xml=for_trace(data.decode("utf-8", "replace")))
        STATS.bytes_out += len(data)
        t.send(data)

    def write_element(self, el):
        self.write_stanza(to_bytes(el))

    def deliver(self, el):
        """Router interface: write one stanza to the client."""
        self.write_stanza(to_bytes(el))

    def write_stanza(self, data):
        """Router interface: write serialised stanza bytes to the client."""
        hooks = self.events.stanza_sending
        if hooks:
            for fn in hooks:
                if fn(self, data):
                    return
        t = self.transport
        if t is None or t.closing:
            return      # nothing may follow </stream:stream> (late replies, e.g. after storage)
        if self.trace:
            log.info("c2s {cid} {jid} OUT {xml}", cid=self.cid, jid=self.full,
                     xml=for_trace(data.decode("utf-8", "replace")))
        stats = STATS
        stats.stanzas_out += 1
        stats.bytes_out += len(data)
        t.send(data)

    def write_patched(self, head, tail):
        """Router interface: a stanza serialised once, with our escaped full JID as 'to'."""
        self.write_stanza(head + self.full_escaped + tail)

    def send_raw(self, data):
        """Write stanza bytes bypassing ``stanza-sending`` (for a feature releasing held output)."""
        t = self.transport
        if t is None or t.closing:
            return
        if self.trace:
            log.info("c2s {cid} {jid} OUT {xml}", cid=self.cid, jid=self.full,
                     xml=for_trace(data.decode("utf-8", "replace")))
        STATS.bytes_out += len(data)
        t.send(data)

    # -- the bound resource ---------------------------------------------------

    def bind(self, username, bare, resource):
        """Become ``bare/resource`` in the router (replacing a session of the same full JID)."""
        self.username = username
        self.bare = bare
        self.resource = resource
        self.full = f"{bare}/{resource}"
        self.full_escaped = domish.escapeToXml(self.full, 1).encode("utf-8")
        # The old session leaves before this one is registered: what its leaving
        # sets off (a room's unavailable reflection to the full JID) must not reach
        # this session, least of all before its bind result.
        old = self.router.sessions.get(self.full)
        if old is not None and old is not self:
            log.info("c2s {cid}: {jid} replaced by a new session {new}", cid=old.cid,
                     jid=old.full, new=self.cid)
            old.replaced()
        self.router.sessions.add(self)
        self.bound = True
        t = self.transport
        if t is not None:
            t.session_bound()
        conn = t.tls_connection() if t is not None else None
        tls = conn.get_protocol_version_name() if conn is not None else (
            "TLS" if t is not None and t.secure else "no TLS")
        # The login line: jid, ip, mechanism and TLS version as fields (log_format =
        # "json" keeps them); no secrets.
        log.info("c2s {cid}: authenticated as {jid} ({mechanism}) from {ip} over {tls}",
                 cid=self.cid, jid=self.full, mechanism=self.sasl.used,
                 ip=(getattr(t, "peer", None) or "?").rsplit(":", 1)[0], tls=tls)

    # Kept for callers of the pre-split name.
    bindSession = bind

    def replaced(self):
        """Another session bound our full JID: leave with a conflict stream error."""
        if self.bound:
            self.bound = False
            self.router.sessions.remove(self)     # as in end(): gone from the router, then leave
            self._leaving()
            self.events.fire("session-unbound", self)
        self.close_with_error("conflict", "replaced by a new session")

    def _broadcastToOwnResources(self, el, include_self):
        targets = [s for s in self.router.sessions.resources(self.bare).values()
                   if s.available and (include_self or s is not self)]
        if targets:
            self._sendPatched(el, targets)

    @staticmethod
    def _sendPatched(el, targets):
        """Serialise ``el`` once and send it to each target session with its own 'to'."""
        head, tail = patchable(el)
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
                    for other in list(self.router.sessions.resources(self.bare).values()):
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
            self.close_with_error("bad-format", "iq needs an id and a valid type")
            return
        if self.router.from_client(el, self):
            return
        if not attrs.get("to"):
            if t == "get" or t == "set":
                self.router.handle_iq(el, self.bare, reply_from=False)
            return
        self.router.route(el)
