"""XMPP over BOSH (XEP-0124 + XEP-0206) at ``/http-bind``.

A BOSH session is a :class:`BOSHTransport`: it outlives the HTTP requests
that carry it. Each request is one ``<body/>`` (``rid`` one more than the
last, up to ``requests`` ahead); its children go to the session in ``rid``
order, and the request is held (at most ``hold`` of them, each for at most
``wait`` seconds) until the session has something to send, which is then
the response. The last ``requests`` responses are kept so a client whose
connection broke can send the same ``rid`` again and get the same answer
(§14.3). ``pause``, ``terminate`` and ``xmpp:restart`` (XEP-0206 §5) are
handled; errors follow §17 (``<body type='terminate' condition='...'/>``).
The session never notices: it sees a transport like TCP's, with
``secure`` true on the HTTPS port and no STARTTLS.
"""
import secrets

from twisted.internet import reactor
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.words.xish import domish

from xmppd.metrics import STATS
from xmppd.session.negotiation import LANG_RE
from xmppd.transports import Transport, limits
from xmppd.wire import NS_STREAMS, XML_LANG
from xmppd.wire import parser as wparser
from xmppd.wire.errors import stream_error
from xmppd.wire.serialize import standalone

log = Logger(namespace="xmppd.c2s")

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
VERSION = "1.11"
MAX_WAIT = 60          # seconds a request may be held (the client asks for less or gets this)
MAX_HOLD = 1
MAX_REQUESTS = 2       # hold + 1
INACTIVITY = 60        # seconds without a request before the session is ended
MAX_PAUSE = 120
POLLING = 2            # the shortest interval for hold=0 clients
BOSH_REQUEST_COST = 1024   # bytes of read budget a request costs at least (paces empty polls)


def body(attrs="", payload=b""):
    head = f"<body xmlns='{NS_HTTPBIND}'{attrs}"
    if not payload:
        return (head + "/>").encode()
    return head.encode() + b">" + payload + b"</body>"


def terminate(condition=None):
    return body(" type='terminate'" + (f" condition='{condition}'" if condition else ""))


class _Held:
    __slots__ = ("rid", "request", "timer")

    def __init__(self, rid, request, timer):
        self.rid, self.request, self.timer = rid, request, timer


class BOSHTransport(Transport):
    """One BOSH session: held requests, the output queue, the rid window."""

    kind = "bosh"

    def __init__(self, bosh, sid, rid, wait, hold, secure, peer_host, peer_port):
        self.bosh = bosh
        self.manager = bosh.http.manager
        self.cfg = self.manager.cfg
        self.trace = self.cfg.trace
        self.sid = sid
        self.rid = rid - 1                  # the last rid processed
        self.wait = wait
        self.hold = hold
        self.requests = hold + 1
        self.secure = secure
        self.can_starttls = False
        self.closing = False
        self.peer = f"{peer_host}:{peer_port}"
        self.limited_ip = None if peer_host in bosh.http.limits.exempt else peer_host
        self._ipCounted = False
        self._preauth = None
        self.held = []                      # _Held, oldest first
        self.early = {}                     # rid -> (request, root, children, size): not yet processed
        self._budget = (limits.Budget(self.cfg.read_rate_limit)
                        if self.limited_ip is not None and self.cfg.read_rate_limit else None)
        self._paced = None                  # the timer of a request held back by the budget
        self.responses = {}                 # rid -> response bytes (for resent rids)
        self.dropped = set()                # rids held when their connection broke
        self.queue = []                     # bytes for the next response
        self._flush = None
        self._inactivity = None
        self._stream_attrs = None           # attributes of the pending stream (re)start answer
        self._version = ""
        self.session = self.manager.new_session(self)
        self._touch(INACTIVITY)
        if self.cfg.preauth_timeout > 0:
            self._preauth = reactor.callLater(self.cfg.preauth_timeout, self._preauth_expired)
        log.info("bosh {cid}: session {sid} opened from {peer}", cid=self.cid, sid=sid,
                 peer=self.peer)

    @property
    def cid(self):
        return self.session.cid if self.session is not None else "c?"

    def who(self):
        s = self.session
        return s.who() if s is not None else self.peer

    # -- requests -------------------------------------------------------------

    def _touch(self, seconds):
        if self._inactivity is not None and self._inactivity.active():
            self._inactivity.cancel()
        self._inactivity = reactor.callLater(seconds, self._inactive)

    def _inactive(self):
        self._inactivity = None
        if self.held:
            self._touch(INACTIVITY)
            return
        log.info("bosh {cid}: session {sid} inactive", cid=self.cid, sid=self.sid)
        self._end("lost")

    def _preauth_expired(self):
        self._preauth = None
        if not self.closing and not (self.session is not None and self.session.bound):
            log.info("bosh {cid}: pre-auth timeout", cid=self.cid)
            self.close_with_error("connection-timeout")

    def request(self, rid, request, root, children, size):
        """A POST for this session; returns NOT_DONE_YET or the response bytes."""
        s = self.session
        if size > self.cfg.max_preauth_size + 1024 and not (s is not None and s.bound):
            self.close_with_error("policy-violation", "stanza too large")
            return terminate("policy-violation")
        if rid <= self.rid:
            for h in self.held:
                if h.rid == rid:          # sent again while still held (its connection broke):
                    h.request = request   # the new request waits in its place
                    request.notifyFinish().addErrback(lambda _, r=request: self._gone(h, r))
                    return server.NOT_DONE_YET
            data = self.responses.get(rid)
            if data is not None:
                return data               # §14.3: the same response again
            if rid in self.dropped:       # held when its connection broke, never answered
                self.dropped.discard(rid)
                h = _Held(rid, request, None)
                self.held.append(h)
                request.notifyFinish().addErrback(lambda _, r=request: self._gone(h, r))
                if self.queue:
                    self._schedule_flush()
                else:
                    h.timer = reactor.callLater(self.wait, self._expire, h)
                return server.NOT_DONE_YET
            return self._fail("item-not-found", request)
        if rid > self.rid + self.requests:
            return self._fail("item-not-found", request)
        self.early[rid] = (request, root, children, size)
        request.notifyFinish().addErrback(lambda _: self.early.pop(rid, None))
        if self._paced is None:
            self._run_in_order()
        return server.NOT_DONE_YET

    def _run_in_order(self):
        """Process the requests that are next in rid order, as fast as the read budget allows
        (read_rate_limit, as on TCP; an over-eager client is slowed down, not cut off)."""
        self._paced = None
        budget = self._budget
        while self.rid + 1 in self.early and not self.closing:
            r, root, children, size = self.early[self.rid + 1]
            if budget is not None:
                cost = max(size, BOSH_REQUEST_COST)
                delay = budget.wait(cost)
                if delay > 0:
                    self._paced = reactor.callLater(delay, self._run_in_order)
                    return
                budget.take(cost)
            del self.early[self.rid + 1]
            self._process(self.rid + 1, r, root, children)

    def _process(self, rid, request, root, children):
        self.rid = rid
        attrs = root.attributes
        self._touch(INACTIVITY)
        h = _Held(rid, request, None)
        self.held.append(h)
        request.notifyFinish().addErrback(lambda _, r=request: self._gone(h, r))
        if attrs.get("type") == "terminate":
            for el in children:
                self._deliver(el)
            self.close()
            return
        pause = attrs.get("pause")
        if pause is not None and pause.isdigit():
            self._answer_all()
            self._touch(min(int(pause), MAX_PAUSE))
            return
        if attrs.get((NS_XBOSH, "restart")) == "true":
            self._open(attrs)
        for el in children:
            self._deliver(el)
            if self.closing:
                return
        while len(self.held) > max(self.hold, 1) or (self.hold == 0 and self.held):
            self._answer(self.held[0], b"")
        if self.queue:
            self._schedule_flush()
        elif h in self.held:
            h.timer = reactor.callLater(self.wait, self._expire, h)

    def _deliver(self, el):
        if self.session is not None and not self.closing:
            self.session.element_received(el)

    def _open(self, attrs):
        lang = attrs.get(XML_LANG)
        if not (lang and LANG_RE.match(lang)):
            lang = None
        version = attrs.get((NS_XBOSH, "version"))
        if version is None:             # a restart need not repeat it (XEP-0206 §5)
            version = self._version
        self._version = version
        self.session.stream_opened(attrs.get("to", self.cfg.domain), version, lang)

    def _expire(self, h):
        h.timer = None
        if h in self.held:
            self._answer(h, b"")

    def _gone(self, h, request):
        """The client dropped a held request's connection."""
        if h.request is request and h in self.held:
            self.held.remove(h)
            self.dropped.add(h.rid)
            for old in [r for r in self.dropped if r <= self.rid - self.requests]:
                self.dropped.discard(old)
            if h.timer is not None and h.timer.active():
                h.timer.cancel()

    def _answer(self, h, payload, attrs=""):
        self.held.remove(h)
        if h.timer is not None and h.timer.active():
            h.timer.cancel()
        data = body(attrs, payload)
        self._remember(h.rid, data)
        if not h.request.finished and not h.request._disconnected:
            STATS.bytes_out += len(data) - len(payload)   # the payload was counted when queued
            h.request.write(data)
            h.request.finish()

    def _answer_all(self):
        payload, self.queue = b"".join(self.queue), []
        for h in list(self.held):
            self._answer(h, payload)
            payload = b""

    def _remember(self, rid, data):
        self.responses[rid] = data
        for old in [r for r in self.responses if r <= self.rid - self.requests]:
            del self.responses[old]

    def _fail(self, condition, request):
        log.info("bosh {cid}: session {sid} terminated: {cond}", cid=self.cid, sid=self.sid,
                 cond=condition)
        self._end("closed")
        return terminate(condition)

    # -- output ---------------------------------------------------------------

    def _schedule_flush(self):
        if self._flush is None:
            self._flush = reactor.callLater(0, self._do_flush)

    def _do_flush(self):
        self._flush = None
        if not self.queue or not self.held:
            return
        payload, self.queue = b"".join(self.queue), []
        attrs, self._stream_attrs = self._stream_attrs or "", None
        self._answer(self.held[0], payload, attrs)

    # -- the interface the session uses ---------------------------------------

    def send(self, data):
        if self.closing:
            return
        payload = standalone(data)
        STATS.bytes_out += len(payload) - len(data)   # the session counted ``data``
        self.queue.append(payload)
        if self.held:
            self._schedule_flush()

    def open_stream(self):
        pass     # the session creation response carries the stream attributes

    def close(self):
        if self.closing:
            return
        self._flush_then_terminate(None)

    def close_with_error(self, condition, text=None, app=None):
        if self.closing:
            return
        if condition not in ("system-shutdown", "conflict", "connection-timeout"):
            log.info("bosh {cid}: stream error {cond}{text} ({who})", cid=self.cid,
                     cond=condition, text=f": {text}" if text else "", who=self.who())
        error = stream_error(condition, text, declare_prefix=True, app=app)
        STATS.bytes_out += len(error)
        self.queue.append(error)
        self._flush_then_terminate("remote-stream-error")

    def _flush_then_terminate(self, condition):
        self.closing = True
        payload, self.queue = b"".join(self.queue), []
        attrs = " type='terminate'" + (f" condition='{condition}'" if condition else "")
        for h in self.held[:-1]:
            self._answer(h, b"")
        if self.held:
            self._answer(self.held[-1], payload, attrs)   # the newest request says goodbye
        self._end("closed")

    def abort(self):
        self.closing = True
        self._answer_all()
        self._end("lost")

    def _end(self, why):
        self.closing = True
        for h in list(self.held):
            self._answer(h, b"", " type='terminate'")
        if self._paced is not None and self._paced.active():
            self._paced.cancel()
        self._paced = None
        for r, _, _, _ in self.early.values():
            if not r.finished:
                data = terminate("item-not-found")
                STATS.bytes_out += len(data)
                r.write(data)
                r.finish()
        self.early.clear()
        if self._inactivity is not None and self._inactivity.active():
            self._inactivity.cancel()
        self._inactivity = None
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        self.session_bound()                    # cancels the pre-auth timer
        if self._ipCounted:
            self._ipCounted = False
            self.bosh.http.limits.conn_limit.release(self.limited_ip)
        self.bosh.sessions.pop(self.sid, None)
        s, self.session = self.session, None
        if s is not None and s.transport is self:
            s.transport_lost(why)
            log.info("bosh {cid}: session {sid} closed ({who})", cid=s.cid, sid=self.sid,
                     who=s.full or "unauthenticated")

    def start_tls(self):
        raise RuntimeError("no STARTTLS over BOSH")

    def restart(self):
        pass     # the client sends xmpp:restart='true'

    def session_bound(self):
        if self._preauth is not None and self._preauth.active():
            self._preauth.cancel()
        self._preauth = None

    def tls_connection(self):
        return None      # a BOSH session spans many TLS connections: no channel binding


class BOSHResource(resource.Resource):
    """``/http-bind``: POST bodies, CORS preflight, the session table."""

    isLeaf = True

    def __init__(self, http):
        super().__init__()
        self.http = http
        self.sessions = {}

    def render_OPTIONS(self, request):
        return self.http.cors.preflight(request)

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"XMPP over BOSH (XEP-0206): POST <body/> elements here.\n"

    def render_POST(self, request):
        data = self._post(request)
        if data is not server.NOT_DONE_YET:
            STATS.bytes_out += len(data)     # an answer at once: an error, a resent response
        return data

    def _post(self, request):
        self.http.cors.apply(request)
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        data = request.content.read()
        STATS.bytes_in += len(data)
        try:
            root, children = self._parse(data)
        except wparser.ParserError:
            return terminate("bad-request")
        if root is None or root.name != "body" or root.uri != NS_HTTPBIND:
            return terminate("bad-request")
        attrs = root.attributes
        rid = attrs.get("rid", "")
        if not rid.isdigit() or len(rid) > 16:
            return terminate("bad-request")
        rid = int(rid)
        sid = attrs.get("sid")
        if sid is None:
            return self._create(request, root, rid)
        t = self.sessions.get(sid)
        if t is None:
            request.setResponseCode(404)     # §17.2 (legacy) alongside the terminate body
            return terminate("item-not-found")
        return t.request(rid, request, root, children, len(data))

    def _parse(self, data):
        limit = self.http.cfg.max_stanza_size
        result = {"root": None, "children": [], "end": False}

        def start(root):
            result["root"] = root

        def end():
            result["end"] = True

        stream = wparser.new_stream(start, result["children"].append, end, limit)
        wparser.parse(_Feed(stream), data)
        if not result["end"]:
            raise wparser.ParserError("incomplete body")
        return result["root"], result["children"]

    def _create(self, request, root, rid):
        attrs = root.attributes
        if attrs.get("to") is None or attrs.get((NS_XBOSH, "version")) is None:
            return terminate("bad-request")
        try:
            wait = max(1, min(int(attrs.get("wait", MAX_WAIT)), MAX_WAIT))
            hold = max(0, min(int(attrs.get("hold", 1)), MAX_HOLD))
        except ValueError:
            return terminate("bad-request")
        sid = secrets.token_hex(16)
        peer = request.getClientAddress()
        host = getattr(peer, "host", "?")
        limits = self.http.limits
        counted = host not in limits.exempt
        if counted and not limits.conn_limit.acquire(host):
            return terminate("policy-violation")     # too many sessions from this address
        t = BOSHTransport(self, sid, rid, wait, hold, request.isSecure(),
                          host, getattr(peer, "port", "?"))
        t._ipCounted = counted
        self.sessions[sid] = t
        domain = domish.escapeToXml(self.http.cfg.domain, 1)
        t._stream_attrs = (f" sid='{sid}' wait='{wait}' hold='{hold}' requests='{t.requests}'"
                           f" inactivity='{INACTIVITY}' polling='{POLLING}' maxpause='{MAX_PAUSE}'"
                           f" ver='{VERSION}' from='{domain}' authid='{sid}' secure='true'"
                           f" xmlns:xmpp='{NS_XBOSH}' xmpp:version='1.0'"
                           f" xmlns:stream='{NS_STREAMS}'")
        t.rid = rid
        h = _Held(rid, request, None)
        t.held.append(h)
        request.notifyFinish().addErrback(lambda _, r=request: t._gone(h, r))
        t._open(attrs)
        if t.queue:
            t._do_flush()
        return server.NOT_DONE_YET

    def close_all(self):
        for t in list(self.sessions.values()):
            t.close_with_error("system-shutdown")


class _Feed:
    """What :func:`xmppd.wire.parser.parse` needs: ``stream`` and ``closing``."""

    closing = False

    def __init__(self, stream):
        self.stream = stream
