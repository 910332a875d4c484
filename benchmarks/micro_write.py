"""Micro-benchmark behind PROFILE.md's fan-out advice: Twisted's buffered write vs a direct send.

    python -m benchmarks.micro_write [--recipients 200] [--rounds 300]

Sets up N loopback TCP connections accepted by a Twisted server (the epoll reactor xmppd uses),
then fans one 300-byte stanza out to all N, one fan-out at a time (the low-rate pattern of the
latency figure), in two ways:

- ``transport.write`` for each recipient, then reactor iterations until every buffer is flushed
  (what xmppd does now: register for writing, wake up, ``doWrite``, ``send``, unregister);
- ``socket.send`` straight away when the transport has nothing buffered (what asyncio does),
  falling back to ``transport.write`` for anything not sent.

It reports the server-side CPU per recipient for each. The clients are drained outside the
measured section.
"""
from __future__ import annotations

import argparse
import socket
import time

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402

STANZA = (b"<message to='user1@localhost/b' type='groupchat' from='room0@conference.localhost/n7'>"
          b"<body>Hello room! A groupchat benchmark message of a typical size, &amp; some more text"
          b" ~7.123~</body></message>") + b" " * 60


class Sink(protocol.Protocol):
    def connectionMade(self):
        self.factory.conns.append(self)


def flushed(conns) -> bool:
    return all(not c.transport.dataBuffer and not c.transport._tempDataBuffer for c in conns)


def run(n: int, rounds: int):
    f = protocol.ServerFactory()
    f.protocol = Sink
    f.conns = []
    port = reactor.listenTCP(0, f, interface="127.0.0.1")
    clients = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port.getHost().port))
        s.setblocking(False)
        clients.append(s)
        reactor.iterate(0)  # accept as we go: the listen backlog is small
    while len(f.conns) < n:
        reactor.iterate(0.01)

    def drain():
        for s in clients:
            try:
                while s.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass

    def buffered():
        for c in f.conns:
            c.transport.write(STANZA)
        while not flushed(f.conns):
            reactor.iterate(0)

    def direct():
        for c in f.conns:
            t = c.transport
            if not t.dataBuffer and not t._tempDataBuffer:
                try:
                    sent = t.socket.send(STANZA)
                except BlockingIOError:
                    sent = 0
                if sent == len(STANZA):
                    continue
                t.write(STANZA[sent:])
            else:
                t.write(STANZA)
        while not flushed(f.conns):
            reactor.iterate(0)

    results = {}
    for name, fn in (("transport.write (buffered)", buffered), ("direct socket.send", direct)) * 2:
        cpu = 0.0
        for _ in range(rounds):
            t0 = time.process_time()
            fn()
            cpu += time.process_time() - t0
            drain()
        results[name] = cpu / (rounds * n) * 1e6  # the second pass (warm) wins
    for name, us in results.items():
        print(f"  {name:<28} {us:6.2f} µs CPU per recipient")
    for s in clients:
        s.close()
    port.stopListening()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipients", type=int, default=200)
    p.add_argument("--rounds", type=int, default=300)
    a = p.parse_args(argv)
    print(f"fan-out of one {len(STANZA)}-byte stanza to {a.recipients} loopback connections, "
          f"{a.rounds} times, one at a time:")
    run(a.recipients, a.rounds)


if __name__ == "__main__":
    main()
