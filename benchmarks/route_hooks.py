"""What the blocking and carbons router hooks cost per routed message, in-process.

    python -m benchmarks.route_hooks

Routes one chat message to a bound full JID 50 000 times through
``Router.route`` (stand-in sessions that only count deliveries, so the
figure is the router's and the hooks' own CPU) with: no feature modules;
blocking and/or carbons installed but unused (their enforcement and copy
hooks are then not registered); and in use by some other account (one
blocklist entry elsewhere, one carbons-enabled session elsewhere), which
registers the hooks so every message pays an event. Best of 5, µs/message.
"""
import time

from twisted.words.xish import domish

from xmppd.config import Config
from xmppd.router import Router


class _Session:
    def __init__(self, full):
        self.full = full
        self.bare, self.resource = full.split("/")
        self.username = self.bare.split("@")[0]
        self.full_escaped = full.encode()
        self.available = True
        self.priority = 0
        self.n = 0

    def deliver(self, el):
        self.n += 1

    def write_stanza(self, data):
        self.n += 1

    def write_patched(self, head, tail):
        self.n += 1


class _Store:
    class blocklist:
        @staticmethod
        def load_all():
            return {}


def make(blocking, carbons, in_use):
    r = Router(Config())
    for user in ("alice", "bob"):
        r.sessions.add(_Session(f"{user}@localhost/r"))
    if blocking:
        from xmppd.services import blocking as b
        b.install(r, r.cfg, _Store)
        if in_use:
            r.blocking.lists["carol"] = {"mallory@localhost"}
            r.blocking._sync_hooks()
    if carbons:
        from xmppd.services import carbons as c
        c.install(r, r.cfg)
        if in_use:
            r.carbons.enabled.add(object())
            r.carbons._sync_hooks()
    return r


def per_message(r, n=50000):
    el = domish.Element((None, "message"))
    el["type"] = "chat"
    el["to"] = "bob@localhost/r"
    el["from"] = "alice@localhost/r"
    el.addElement("body", content="hello")
    start = time.perf_counter()
    for _ in range(n):
        r.route(el)
    return (time.perf_counter() - start) / n * 1e6


def main():
    rows = [("no feature modules", 0, 0, 0),
            ("blocking, unused", 1, 0, 0), ("carbons, unused", 0, 1, 0),
            ("blocking, in use elsewhere", 1, 0, 1), ("carbons, in use elsewhere", 0, 1, 1),
            ("both, in use elsewhere", 1, 1, 1)]
    for label, b, c, used in rows:
        r = make(b, c, used)
        print(f"{label:30s} {min(per_message(r) for _ in range(5)):6.2f} us/message")


if __name__ == "__main__":
    main()
