"""XEP-0198 Stream Management: acks, and resumption of a session whose connection dropped.

A feature module on the session events (:mod:`xmppd.session.events`), so
every transport (TCP, WebSocket, BOSH) gets it with no second copy. The
per-session state is ``session.sm`` (:class:`SMState`, None until
``<enable/>``).

* Counting: ``stanza-received`` counts what the client sent (``h`` of our
  ``<a/>``); ``stanza-sending`` keeps a copy of every stanza written to the
  client (serialised bytes, as written) until the client acks it. Counters
  wrap at 2^32 (§4). An ``<a h/>`` acking more than was sent is a stream
  error ``undefined-condition`` with the ``<handled-count-too-high h send-count/>``
  application condition (§4).
  The queue holds at most ``smacks_max_unacked_stanzas`` stanzas and
  ``max_send_buffer`` bytes: a client that never acks is closed with
  ``resource-constraint`` instead of growing memory.
  We ask for acks with ``<r/>`` one second after the first unacked stanza.
* Resumption (§5): ``<enable resume='true'/>`` gets an unguessable id bound
  to the account and a timeout (``smacks_max_resumption_time``). When the
  connection drops (not when the stream is closed), the session stays bound
  and detached, queueing what it is sent; a ``<resume previd h/>`` after
  SASL on a new stream from the same account re-attaches it (``conflict``
  for a still-open old connection), acks with ``h`` and resends the rest.
  Another account's id, an unknown or ended one: ``<failed><item-not-found/>``.
* A session that ends with unacked stanzas (not resumed in time, overflow,
  closed) does not lose them (Prosody's rules): chat/normal messages go to
  the account's bare JID (another resource, or offline storage), errors and
  our own echoes are dropped, everything else bounces with
  ``recipient-unavailable``.
"""
import collections
import secrets

from twisted.internet import reactor
from twisted.logger import Logger

from xmppd.jid import parse_or_none

NS = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CARBONS = "urn:xmpp:carbons:2"
WRAP = 1 << 32
ACK_REQUEST_DELAY = 1.0     # seconds after the first unacked stanza before we send <r/>

_FEATURE = f"<sm xmlns='{NS}'/>"
_R = f"<r xmlns='{NS}'/>".encode()

log = Logger(namespace="xmppd.sm")


def _failed(condition, h=None):
    hattr = f" h='{h}'" if h is not None else ""
    return f"<failed xmlns='{NS}'{hattr}><{condition} xmlns='{NS_STANZAS}'/></failed>".encode()


def parse_h(value):
    """An ``h`` attribute as an int in [0, 2^32), or None."""
    if not value or len(value) > 10 or not value.isdigit():
        return None
    h = int(value)
    return h if h < WRAP else None


class SMState:
    """One session's counters and unacked queue."""

    __slots__ = ("handled", "acked", "queue", "size", "token", "max", "timer", "r_pending",
                 "closing")

    def __init__(self):
        self.handled = 0             # stanzas received from the client (mod 2^32)
        self.acked = 0               # our stanzas the client acked (mod 2^32)
        self.queue = collections.deque()   # unacked serialised stanzas, oldest first
        self.size = 0                # bytes in ``queue``
        self.token = None            # resumption id, if resumable
        self.max = 0                 # resumption timeout (s)
        self.timer = None            # hibernation timeout, or the <r/> request
        self.r_pending = None
        self.closing = False         # overflowed: the session is being closed

    @property
    def sent(self):
        return (self.acked + len(self.queue)) % WRAP

    def ack(self, h):
        """Drop what ``h`` acknowledges; False if ``h`` acks more than was sent."""
        n = (h - self.acked) % WRAP
        if n > len(self.queue):
            return False
        q = self.queue
        size = self.size
        for _ in range(n):
            size -= len(q.popleft())
        self.size = size
        self.acked = h
        return True


class StreamManagement:
    def __init__(self, manager):
        self.manager = manager
        self.router = manager.router
        self.cfg = manager.cfg
        self.max_queue = self.cfg.smacks_max_unacked_stanzas
        self.max_bytes = self.cfg.max_send_buffer or float("inf")   # the same byte bound as c2s
        self.max_time = self.cfg.smacks_max_resumption_time
        self.tokens = {}             # resumption id -> session (live or detached)

    def install(self):
        ev = self.manager.events
        ev.add("session-started", self.started)
        ev.add("stream-features", self.features)
        ev.add("nonza-received", self.nonza)
        ev.add("stanza-received", self.received, priority=100)
        ev.add("stanza-sending", self.sending, priority=100)   # before CSI holds anything
        ev.add("transport-lost", self.transport_lost)
        ev.add("session-unbound", self.unbound)

    @staticmethod
    def started(session):
        session.sm = None

    # -- negotiation ------------------------------------------------------------

    def features(self, session, parts):
        if session.authenticated:
            parts.append(_FEATURE)

    def nonza(self, session, el):
        if el.uri != NS:
            return None
        name = el.name
        if not session.authenticated:
            session.close_with_error("not-authorized", "authenticate first")
            return True
        sm = getattr(session, "sm", None)
        if name == "a":
            self.on_ack(session, sm, el)
        elif name == "r":
            if sm is None:
                session.close_with_error("unsupported-stanza-type", "stream management is not enabled")
            else:
                session.send(f"<a xmlns='{NS}' h='{sm.handled}'/>".encode())
        elif name == "enable":
            self.on_enable(session, sm, el)
        elif name == "resume":
            self.on_resume(session, el)
        else:
            session.close_with_error("unsupported-stanza-type")
        return True

    def on_enable(self, session, sm, el):
        if not session.bound or sm is not None:
            session.send(_failed("unexpected-request"))     # §3: only once, after bind
            return
        sm = session.sm = SMState()
        resume = el.getAttribute("resume") in ("true", "1") and self.max_time > 0
        if not resume:
            session.send(f"<enabled xmlns='{NS}'/>".encode())
            return
        wanted = parse_h(el.getAttribute("max") or "")
        sm.max = min(wanted, self.max_time) if wanted else self.max_time
        sm.token = secrets.token_urlsafe(24)
        self.tokens[sm.token] = session
        session.send(f"<enabled xmlns='{NS}' id='{sm.token}' resume='true' max='{sm.max}'/>"
                     .encode())

    def on_ack(self, session, sm, el):
        if sm is None:
            session.close_with_error("unsupported-stanza-type", "stream management is not enabled")
            return
        h = parse_h(el.getAttribute("h"))
        if h is None:
            session.close_with_error("bad-format", "h must be an integer below 2^32")
            return
        if not sm.ack(h):
            self.too_high(session, h, sm.sent)
            return
        sm.r_pending = None

    @staticmethod
    def too_high(session, h, sent):
        log.info("sm: {jid} acked {h} of {sent} stanzas", jid=session.full, h=h, sent=sent)
        session.close_with_error(
            "undefined-condition", f"handled-count-too-high: h={h}, send-count={sent}",
            app=f"<handled-count-too-high xmlns='{NS}' h='{h}' send-count='{sent}'/>")

    def on_resume(self, session, el):
        if session.bound or getattr(session, "sm", None) is not None:
            session.send(_failed("unexpected-request"))
            return
        old = self.tokens.get(el.getAttribute("previd") or "")
        h = parse_h(el.getAttribute("h"))
        if old is None or old.ended or old.username != session.username \
                or (old.transport is not None and old.transport.closing) \
                or not secrets.compare_digest(old.sm.token, el.getAttribute("previd")):
            # Unknown, ended (or its stream closed on purpose) or another account's id:
            # the same answer for all (§5).
            session.send(_failed("item-not-found"))
            return
        sm = old.sm
        if h is None:
            session.send(_failed("bad-request"))
            return
        if (h - sm.acked) % WRAP > len(sm.queue):
            session.send(_failed("undefined-condition"))
            self.too_high(session, h, sm.sent)
            return
        if sm.timer is not None and sm.timer.active():
            sm.timer.cancel()
        sm.timer = sm.r_pending = None
        previous = old.transport
        if previous is not None:             # §5: the old stream is still open
            old.detach()
            previous.close_with_error("conflict", "replaced by a resumed stream")
        transport = session.transport
        old.attach(transport)                # ends the new, unbound session
        log.info("sm: {jid} resumed ({n} unacked)", jid=old.full, n=len(sm.queue))
        old.send(f"<resumed xmlns='{NS}' previd='{sm.token}' h='{sm.handled}'/>".encode())
        sm.ack(h)
        for data in list(sm.queue):
            old.send_raw(data)
        if sm.queue:
            self._request_ack(old, sm)
        self.manager.events.fire("session-resumed", old)

    # -- counting ---------------------------------------------------------------

    @staticmethod
    def received(session, el):
        sm = session.sm
        if sm is not None:
            sm.handled = (sm.handled + 1) % WRAP
        return None

    def sending(self, session, data):
        """Count and keep ``data`` until acked; True (do not write) once over the bound."""
        sm = session.sm
        if sm is None:
            return None
        q = sm.queue
        q.append(data)
        sm.size += len(data)
        if len(q) > self.max_queue or sm.size > self.max_bytes:
            if not sm.closing:
                sm.closing = True
                self.overflow(session)
            return True
        if sm.r_pending is None and session.transport is not None:
            self._request_ack(session, sm)
        return None

    def _request_ack(self, session, sm):
        sm.r_pending = reactor.callLater(ACK_REQUEST_DELAY, self._send_r, session)

    @staticmethod
    def _send_r(session):
        sm = getattr(session, "sm", None)
        if sm is None or session.ended:
            return
        sm.r_pending = False         # asked; not again until the client answers
        if sm.queue and session.transport is not None:
            session.send(_R)

    def overflow(self, session):
        log.info("sm: {jid} has more than {n} unacked stanzas; closing", jid=session.full,
                 n=self.max_queue)
        sm = session.sm
        self._forget(sm)
        if session.transport is not None:
            session.close_with_error("resource-constraint", "too many unacknowledged stanzas")
        else:
            session.end()

    # -- hibernation and the end ------------------------------------------------

    def transport_lost(self, session, reason):
        sm = session.sm
        if sm is None or sm.token is None or sm.closing or reason != "lost":
            return None
        if sm.r_pending and sm.r_pending.active():
            sm.r_pending.cancel()
        sm.r_pending = None
        sm.timer = reactor.callLater(sm.max, self._expired, session)
        log.info("sm: {jid} detached, resumable for {s} s ({n} unacked)", jid=session.full,
                 s=sm.max, n=len(sm.queue))
        self.manager.events.fire("session-hibernated", session, sm.queue)
        return True

    def _expired(self, session):
        sm = getattr(session, "sm", None)
        if sm is not None:
            sm.timer = None
        if not session.ended and session.transport is None:
            log.info("sm: {jid} was not resumed in time", jid=session.full)
            session.end()

    def _forget(self, sm):
        if sm.token is not None:
            self.tokens.pop(sm.token, None)
        for t in (sm.timer, sm.r_pending):
            if t and t.active():
                t.cancel()
        sm.timer = sm.r_pending = None

    def unbound(self, session):
        sm = getattr(session, "sm", None)
        if sm is None:
            return None
        self._forget(sm)
        session.sm = None
        if sm.queue:
            self.handle_unacked(session, sm.queue)
        return None

    def handle_unacked(self, session, queue):
        """Prosody's rules for what a session leaves unacked (see the module docstring)."""
        from xmppd.wire.serialize import parse_stanza
        router = self.router
        own = session.full
        bare = parse_or_none(session.bare)
        for data in queue:
            try:
                el = parse_stanza(data.decode("utf-8"))
            except Exception:
                log.failure("sm: dropping an unreadable unacked stanza of {jid}", jid=own)
                continue
            attrs = el.attributes
            t = attrs.get("type")
            if t == "error" or attrs.get("from") == own:
                continue
            try:
                if el.name == "message" and t in (None, "normal", "chat"):
                    if _is_carbon(el):
                        continue     # a copy: the original is the account's already
                    attrs["to"] = session.bare
                    router._message_to_bare(el, bare, t or "normal")
                else:
                    router.bounce(el, "recipient-unavailable")
            except Exception:
                log.failure("sm: handling an unacked stanza of {jid} failed", jid=own)


def _is_carbon(el):
    for child in el.elements():
        if child.uri == NS_CARBONS:
            return True
    return False


def install(manager):
    sm = StreamManagement(manager)
    sm.install()
    return sm
