"""Failed logins per account and per IP address, in a sliding window.

Each failure is answered later the closer the account or address is to its
limit (slow brute force), and once the limit is reached attempts are
refused with ``<temporary-auth-failure/>`` *before* any password check,
until the window has passed. Unknown and existing accounts are treated
alike so the throttle does not reveal which accounts exist.
"""
import ipaddress
from collections import deque

from twisted.internet import reactor

MAX_TRACKED = 100_000     # throttle keys kept in memory (oldest are forgotten first)


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
