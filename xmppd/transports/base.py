"""What every client transport does alike: limits, timeouts, the session link.

:class:`ConnectionTransport` is the shared half of a transport that owns one
network connection (TCP stream, WebSocket): the per-IP connection limit,
the read-rate bucket, the pre-auth and idle timeouts, telling a closed
stream from a dropped connection, and the session hand-over of XEP-0198.
A framing (tcp.py, websocket.py) adds the parser and the bytes it writes.
"""
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.logger import Logger

from xmppd.transports import Transport, limits

log = Logger(namespace="xmppd.c2s")


class ConnectionTransport(Transport):
    """Mixin for a Twisted protocol carrying one session (``self.transport`` is Twisted's)."""

    kind = "c2s"

    def _setup(self, listener):
        self.listener = listener
        self.manager = listener.manager
        self.cfg = listener.manager.cfg
        self.trace = self.cfg.trace
        self.session = None
        self.closing = False
        self.secure = False
        self.peer = "?"
        self.limited_ip = None      # peer address when per-IP limits apply to it
        self._ipCounted = False
        self._rate = None           # limits.ReadRate
        self._timer = None
        self._idleTimer = None
        self._closeTimer = None     # aborts a peer that never completes the close
        self._last = 0.0

    @property
    def cid(self):
        return self.session.cid if self.session is not None else "c?"

    def who(self):
        s = self.session
        return s.who() if s is not None else self.peer

    def _opened(self, host, port):
        """The connection is up: make the session, apply the limits; False if refused."""
        self.peer = f"{host}:{port}"
        self.session = self.manager.new_session(self)
        shared = self.listener.limits
        if host is not None and host not in shared.exempt:
            self.limited_ip = host
            if not shared.conn_limit.acquire(host):
                self.close_with_error("policy-violation", "too many connections from your address")
                return False
            self._ipCounted = True
            if self.cfg.read_rate_limit:
                self._rate = limits.ReadRate(self, self.cfg.read_rate_limit)
        self.listener.streams.add(self)
        if shared.pause.paused:
            self.pause_reading()
        self._last = reactor.seconds()
        if self.cfg.preauth_timeout > 0:
            self._timer = reactor.callLater(self.cfg.preauth_timeout, self._timeout, "pre-auth")
        if self.cfg.idle_timeout > 0:
            self._idleTimer = reactor.callLater(self.cfg.idle_timeout, self._idleCheck)
        log.info("{kind} {cid}: connection opened from {peer}", kind=self.kind, cid=self.cid,
                 peer=self.peer)
        return True

    def pause_reading(self):
        """Server-wide back-pressure (limits.InputPause) starts."""
        t = self.transport
        if t is not None and not self.closing:
            t.pauseProducing()

    def resume_reading(self):
        t = self.transport
        if t is None or self.closing or (self._rate is not None and self._rate.held):
            return                  # ReadRate resumes it once its held data is parsed
        t.resumeProducing()

    def _lost(self):
        """The connection is gone: release everything, tell the session why."""
        # "closed": the stream was ended on purpose (our close or stream error, the
        # client's close or stream error); "lost": the connection dropped.
        why = "closed" if self.closing else "lost"
        self.closing = True
        if self._ipCounted:
            self._ipCounted = False
            self.listener.limits.conn_limit.release(self.limited_ip)
        if self._rate is not None:
            self._rate.stop()
            self._rate = None
        self.listener.streams.discard(self)
        for t in (self._timer, self._idleTimer, self._closeTimer):
            if t is not None and t.active():
                t.cancel()
        self._timer = self._idleTimer = self._closeTimer = None
        s, self.session = self.session, None
        who = "unauthenticated"
        if s is not None:
            who = s.full or who
            if s.transport is self:
                s.transport_lost(why)
        # The logout line: the JID and address as fields (log_format = "json").
        log.info("{kind} {cid}: connection closed ({who}) from {ip}", kind=self.kind,
                 cid=s.cid if s else "c?", who=who, jid=s.full if s else None,
                 ip=self.peer.rsplit(":", 1)[0])

    def _timeout(self, what):
        self._timer = None
        if not self.closing and not (self.session is not None and self.session.bound):
            log.info("{kind} {cid}: {what} timeout", kind=self.kind, cid=self.cid, what=what)
            self.close_with_error("connection-timeout")

    def _idleCheck(self):
        self._idleTimer = None
        if self.closing:
            return
        idle = reactor.seconds() - self._last
        limit = self.cfg.idle_timeout
        if idle >= limit:
            log.info("{kind} {cid}: idle timeout", kind=self.kind, cid=self.cid)
            self.close_with_error("connection-timeout")
        else:
            self._idleTimer = reactor.callLater(limit - idle, self._idleCheck)

    def _stop_preauth_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def tls_connection(self):
        if not self.secure:
            return None
        handle = self.transport.getHandle()
        return handle if isinstance(handle, SSL.Connection) else None
