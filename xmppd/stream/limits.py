"""Abuse limits for client connections: per IP, per account, per session.

Kept apart from :mod:`xmppd.stream.c2s` so the stream code only calls in at
a few points (connect, data received, password check result):

* :class:`ConnectionsPerIP` -- simultaneous connections from one address
  (``cfg.max_connections_per_ip``, 0 = unlimited). "Per IP" means per
  IPv4 address or per IPv6 /64 (:func:`ip_key`).
* :class:`AuthThrottle` -- failed logins per account and per IP in a sliding
  window: each failure is answered later the closer the account or address
  is to its limit (slow brute force), and once the limit is reached
  attempts are refused with ``<temporary-auth-failure/>`` *before* any
  password check, until the window has passed. Unknown and existing accounts are treated alike so the
  throttle does not reveal which accounts exist.
* :class:`ReadRate` -- a token bucket per session (``cfg.read_rate_limit``
  bytes/s, burst of two seconds as Prosody's mod_limits): a client that
  sends faster is *slowed down* (reads paused, the excess held back and
  parsed as the bucket refills), never dropped.
* :class:`SendBacklogGuard` -- a client that stops reading makes Twisted
  buffer everything sent to it (a busy room fills memory); once a second
  every stream's unsent backlog is checked and a stream over
  ``cfg.max_send_buffer`` bytes is aborted (nothing more can be written
  to it anyway). No cost on the delivery path.
* :class:`Exempt` -- the ``cfg.limits_exempt`` networks the per-IP limits
  skip (loopback by default).
* :func:`limit_depth` and :func:`parse` -- parser guards: element nesting
  depth (deep trees overflow Python's recursion limit when serialised) and
  a stanza-size check that also catches a stanza that arrives complete in
  one large read (Twisted's check only runs between ``parse`` calls).
"""
import ipaddress
from collections import deque

from twisted.internet import reactor, task
from twisted.logger import Logger
from twisted.words.xish import domish

MAX_DEPTH = 64            # element nesting, stream root included
PARSE_CHUNK = 4096        # bytes per parser call: the size check overshoots by at most this
MAX_TRACKED = 100_000     # throttle keys kept in memory (oldest are forgotten first)

log = Logger(namespace="xmppd.c2s")


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


def ip_key(host):
    """The unit per-IP limits count: the address, or its /64 for IPv6.

    One IPv6 host usually owns a whole /64, so counting single addresses
    would let it sidestep every per-IP limit.
    """
    if ":" not in host:
        return host
    try:
        addr = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))


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


class AuthThrottle:
    """Failed logins in the last ``window`` seconds, per account and per IP.

    ``ip`` is None for exempt addresses (only the account is counted).
    """

    MAX_DELAY = 2.0       # seconds, reached at the limit; grows with the square of the fill

    def __init__(self, per_account, per_ip, window, clock=None):
        self.per_account = per_account
        self.per_ip = per_ip
        self.window = window
        self.clock = clock or reactor.seconds
        self.failures = {}    # ("u", name) | ("ip", addr) -> deque of timestamps

    def _count(self, key, now):
        q = self.failures.get(key)
        if q is None:
            return 0
        cutoff = now - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self.failures[key]
            return 0
        return len(q)

    def refused(self, ip, username):
        """True when this account or address is locked out for now."""
        if not self.window:
            return False
        now = self.clock()
        ip = ip_key(ip) if ip is not None else None
        return bool((self.per_account and self._count(("u", username), now) >= self.per_account)
                    or (self.per_ip and ip is not None
                        and self._count(("ip", ip), now) >= self.per_ip))

    def failed(self, ip, username):
        """Record a failure; return how long to wait before answering it."""
        if not self.window:
            return 0.0
        now = self.clock()
        ip = ip_key(ip) if ip is not None else None
        fill = 0.0
        for key, limit in ((("u", username), self.per_account), (("ip", ip), self.per_ip)):
            if not limit or key[1] is None:
                continue
            q = self.failures.pop(key, None)          # re-insert: dict order = recency
            if q is None:
                q = deque(maxlen=limit)
            q.append(now)
            self.failures[key] = q
            fill = max(fill, self._count(key, now) / limit)
        while len(self.failures) > MAX_TRACKED:
            del self.failures[next(iter(self.failures))]
        return self.MAX_DELAY * min(1.0, fill) ** 2

    def succeeded(self, username):
        """A correct password clears the account's failures (not the address's)."""
        self.failures.pop(("u", username), None)


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
        else:
            xs.transport.resumeProducing()

    def stop(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.xs = None
        self.held = b""


def send_backlog(transport):
    """Bytes written to ``transport`` but not yet sent (Twisted FileDescriptor buffers).

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
                         who=xs.full or xs.peer)
                xs.closing = True
                transport.abortConnection()


def _too_deep(*args):
    raise domish.ParserError("Maximum element depth exceeded")


def limit_depth(stream, max_depth=MAX_DEPTH):
    """Wrap the expat element handlers of a domish stream to cap nesting depth."""
    p = stream.parser
    start, end = p.StartElementHandler, p.EndElementHandler
    depth = 0

    def on_start(name, attrs):
        nonlocal depth
        if depth >= max_depth:
            _too_deep()
        depth += 1
        start(name, attrs)

    def on_end(name):
        nonlocal depth
        depth -= 1
        end(name)

    p.StartElementHandler = on_start
    p.EndElementHandler = on_end


def parse(xs, data):
    """Feed ``data`` to ``xs.stream`` in chunks so the size limit holds per stanza.

    The stream may be replaced (restart) or closed between chunks; the rest
    then goes to the new parser, or is dropped once the stream is closing.
    """
    for i in range(0, len(data), PARSE_CHUNK):
        stream = xs.stream
        if stream is None or xs.closing:
            return
        stream.parse(data[i:i + PARSE_CHUNK])
