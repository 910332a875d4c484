"""Abuse limits a transport enforces on client connections.

The transport calls in at a few points (connect, data received, a timer):

* :class:`ConnectionsPerIP` -- simultaneous connections from one address
  (``cfg.max_connections_per_ip``, 0 = unlimited), shared by every
  transport. "Per IP" means per IPv4 address or per IPv6 /64
  (:func:`xmppd.auth.throttle.ip_key`).
* :class:`ReadRate` -- a token bucket per connection (``cfg.read_rate_limit``
  bytes/s, burst of two seconds as Prosody's mod_limits): a client that
  sends faster is *slowed down* (reads paused, the excess held back and
  parsed as the bucket refills), never dropped.
  BOSH, whose data comes as whole requests, holds a request back instead
  (:class:`Budget`; each request costs at least ``BOSH_REQUEST_COST`` bytes,
  so empty polls are paced too).
* :class:`SendBacklogGuard` -- a client that stops reading makes Twisted
  buffer everything sent to it (a busy room fills memory); once a second
  every connection's unsent backlog is checked and one over
  ``cfg.max_send_buffer`` bytes is aborted (nothing more can be written
  to it anyway). No cost on the delivery path.
* :class:`Exempt` -- the ``cfg.limits_exempt`` networks the per-IP limits
  skip (loopback by default).
* :class:`InputPause` -- server-wide back-pressure: while a store that must
  not lose data is behind (the message archive), no client connection is
  read, so senders slow down instead of their messages being dropped.

Failed-login throttling is :mod:`xmppd.auth.throttle`; the parser guards
(size, depth, restricted XML) are :mod:`xmppd.wire.parser`.
"""
import ipaddress

from twisted.internet import reactor, task
from twisted.logger import Logger

from xmppd.auth.throttle import MAX_TRACKED, ip_key

log = Logger(namespace="xmppd.c2s")


class ClientLimits:
    """The per-IP state every client transport shares (one per server)."""

    def __init__(self, cfg):
        self.exempt = Exempt(cfg.limits_exempt)
        self.conn_limit = ConnectionsPerIP(cfg.max_connections_per_ip)
        self.pause = InputPause()


class InputPause:
    """Stop reading from every client connection while any ``reason`` holds.

    ``groups`` are the listeners' sets of live connection transports (TCP,
    WebSocket); a connection opened during a pause starts paused. A
    connection its own ReadRate holds paused stays so until that drains.
    """

    def __init__(self):
        self.reasons = set()
        self.groups = []
        self.count = 0               # pauses so far (xmppd_input_pauses_total)

    @property
    def paused(self):
        return bool(self.reasons)

    def hold(self, reason, on):
        was = bool(self.reasons)
        if on:
            self.reasons.add(reason)
        else:
            self.reasons.discard(reason)
        if bool(self.reasons) == was:
            return
        if not was:
            self.count += 1
            if self.count & (self.count - 1) == 0:          # 1, 2, 4 ...: no log flood
                log.info("input paused ({why}; {n} time(s) so far)", why=reason, n=self.count)
        for group in self.groups:
            for xs in list(group):
                if was:
                    xs.resume_reading()
                else:
                    xs.pause_reading()


class Exempt:
    """Membership test for the ``limits_exempt`` networks (cached per address)."""

    def __init__(self, networks):
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.cache = {}

    def __contains__(self, host):
        hit = self.cache.get(host)
        if hit is None:
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                return False
            if getattr(addr, "ipv4_mapped", None):
                addr = addr.ipv4_mapped
            hit = any(addr in n for n in self.networks)
            if len(self.cache) > MAX_TRACKED:
                self.cache.clear()
            self.cache[host] = hit
        return hit


class ConnectionsPerIP:
    """Counts live connections per address; ``acquire`` refuses above the limit."""

    def __init__(self, limit):
        self.limit = limit
        self.counts = {}

    def acquire(self, ip):
        ip = ip_key(ip)
        n = self.counts.get(ip, 0)
        if self.limit and n >= self.limit:
            return False
        self.counts[ip] = n + 1
        return True

    def release(self, ip):
        ip = ip_key(ip)
        n = self.counts.get(ip, 0) - 1
        if n > 0:
            self.counts[ip] = n
        else:
            self.counts.pop(ip, None)


class Budget:
    """A token bucket for transports that receive whole messages (BOSH requests).

    ``wait(n)`` says how long to hold a message of ``n`` bytes back before
    taking it (``take(n)``); the burst is two seconds' worth, as ReadRate's.
    """

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate):
        self.rate = float(rate)
        self.capacity = self.rate * ReadRate.BURST_SECONDS
        self.tokens = self.capacity
        self.stamp = reactor.seconds()

    def wait(self, n):
        now = reactor.seconds()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        need = min(n, self.capacity) - self.tokens
        return need / self.rate if need > 0 else 0.0

    def take(self, n):
        self.tokens -= n


class ReadRate:
    """Token bucket on the bytes one session sends.

    Data beyond the bucket is held back and fed to the parser as tokens
    refill, while reading from the socket is paused: a flooding client is
    processed at ``rate`` bytes/s and nothing is lost.
    """

    __slots__ = ("xs", "rate", "capacity", "tokens", "stamp", "timer", "held", "releasing")

    BURST_SECONDS = 2
    STEP = 4096           # bytes released at least per wake-up (always progress)

    def __init__(self, xs, rate):
        self.xs = xs
        self.rate = float(rate)
        self.capacity = self.rate * self.BURST_SECONDS
        self.tokens = self.capacity
        self.stamp = reactor.seconds()
        self.timer = None
        self.held = b""
        self.releasing = False

    def _refill(self):
        now = reactor.seconds()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def admit(self, data):
        """Return the part of ``data`` to parse now; hold the rest back."""
        if self.releasing:
            return data
        if self.held:
            self.held += data          # arrived before the pause took effect (e.g. TLS buffer)
            return b""
        self._refill()
        allowed = int(self.tokens) if self.tokens > 0 else 0
        if len(data) <= allowed:
            self.tokens -= len(data)
            return data
        self.tokens -= allowed
        self.held = data[allowed:]
        self.xs.transport.pauseProducing()
        self._schedule()
        return data[:allowed]

    def _schedule(self):
        need = min(len(self.held), self.STEP) - self.tokens
        self.timer = reactor.callLater(max(0.0, need / self.rate), self._release)

    def _release(self):
        self.timer = None
        xs = self.xs
        if xs is None or xs.closing:
            return
        self._refill()
        n = max(int(self.tokens), min(len(self.held), self.STEP))
        chunk, self.held = self.held[:n], self.held[n:]
        self.tokens -= len(chunk)
        self.releasing = True
        try:
            xs.dataReceived(chunk)
        finally:
            self.releasing = False
        if self.xs is None or xs.closing:
            return
        if self.held:
            self._schedule()
        elif not xs.listener.limits.pause.paused:
            xs.transport.resumeProducing()

    def stop(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.xs = None
        self.held = b""


def send_backlog(transport):
    """Bytes written to the Twisted ``transport`` but not yet sent (Twisted FileDescriptor buffers).

    With TLS these are the encrypted bytes; 0 when the transport is not a
    FileDescriptor (then nothing can be measured).
    """
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return 0


class SendBacklogGuard:
    """Aborts streams whose unsent output exceeds ``limit`` bytes (checked every ``interval`` s)."""

    def __init__(self, streams, limit, interval=1.0):
        self.streams = streams
        self.limit = limit
        self.interval = interval
        self.loop = task.LoopingCall(self.check)

    def start(self):
        if self.limit:
            self.loop.start(self.interval, now=False)

    def stop(self):
        if self.loop.running:
            self.loop.stop()

    def check(self):
        limit = self.limit
        for xs in list(self.streams):
            transport = xs.transport
            if transport is None:
                continue
            n = send_backlog(transport)
            if n > limit:
                log.info("c2s {cid}: {n} bytes unsent, over max_send_buffer ({limit}): the client "
                         "does not read; closing ({who})", cid=xs.cid, n=n, limit=limit,
                         who=xs.who() if hasattr(xs, "who") else (xs.full or xs.peer))
                xs.closing = True
                closing = getattr(xs, "_stream_closing", None)
                if closing is not None:
                    closing()
                transport.abortConnection()
