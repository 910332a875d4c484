"""Login rate over WebSocket (RFC 7395) against TCP, on one fresh xmppd.

    python -m benchmarks.ws_login [--clients 400] [--concurrency 20] [--rounds 3]

Creates accounts user1..userN with stored credentials (benchmarks/servers.py, as the comparison
does: the server checks every password against the stored keys), starts one server pinned to
CPU 0 and logs N clients in over plain TCP and over ws://.../xmpp-websocket, alternating, from
this process pinned to CPU 1. A login is: connect, open, features, SASL PLAIN, restart, bind, <presence/> and a ping
answered. logins/s = N / wall time of the batch; the server's CPU share is printed too.
The WebSocket client is autobahn's asyncio client (a real WebSocket library).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import tempfile
import time
from pathlib import Path

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

from benchmarks.servers import free_port, prepare_xmppd, start_xmppd

PASSWORD = "password"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def tcp_login(port, i):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    buf = b""

    async def until(marker):
        nonlocal buf
        while marker not in buf:
            chunk = await r.read(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        buf = buf.split(marker, 1)[1]

    head = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            b"to='localhost' version='1.0'>")
    w.write(head)
    await until(b"</stream:features>")
    cred = base64.b64encode(f"\0user{i}\0{PASSWORD}".encode())
    w.write(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + cred + b"</auth>")
    await until(b"<success")
    w.write(head)
    await until(b"</stream:features>")
    w.write(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
            b"<presence/><iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await until(b"id='p'")
    return w


class _WS(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.set_result(self)

    def onMessage(self, payload, isBinary):
        self.factory.queue.put_nowait(payload)

    def onClose(self, wasClean, code, reason):
        self.factory.queue.put_nowait(b"")
        if not self.factory.opened.done():
            self.factory.opened.set_exception(ConnectionError(reason))


async def ws_login(port, i):
    loop = asyncio.get_running_loop()
    f = WebSocketClientFactory(f"ws://127.0.0.1:{port}/xmpp-websocket", protocols=["xmpp"])
    f.protocol = _WS
    f.queue = asyncio.Queue()
    f.opened = loop.create_future()
    await loop.create_connection(f, "127.0.0.1", port)
    p = await f.opened

    async def until(marker):
        while True:
            m = await f.queue.get()
            if not m:
                raise ConnectionError("closed")
            if marker in m:
                return

    def send(s):
        p.sendMessage(s.encode(), isBinary=False)

    opening = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
    send(opening)
    await until(b"features")
    cred = base64.b64encode(f"\0user{i}\0{PASSWORD}".encode()).decode()
    send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>")
    await until(b"<success")
    send(opening)
    await until(b"features")
    send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    send("<presence xmlns='jabber:client'/>")
    send("<iq xmlns='jabber:client' type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await until(b"id='p'")
    return p


async def batch(login, port, n, concurrency, offset, pid):
    sem = asyncio.Semaphore(concurrency)
    conns = []

    async def one(i):
        async with sem:
            conns.append(await login(port, i))

    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(one(offset + i) for i in range(1, n + 1)))
    wall, cpu = time.monotonic() - t0, cpu_seconds(pid) - c0
    for c in conns:
        if hasattr(c, "close"):
            c.close()
        else:
            c.sendClose()
    await asyncio.sleep(1.0)
    return n / wall, cpu / wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory(prefix="xmppd-wsbench-") as tmp:
        data = Path(tmp) / "xmppd"
        prepare_xmppd(data, a.clients * 2 * a.rounds)
        http = free_port()
        server = start_xmppd(data, 0 if (os.cpu_count() or 1) > 1 else None,
                             extra=["--http-port", str(http)])
        results = {"tcp": [], "websocket": []}
        try:
            for r in range(a.rounds):
                for kind, login, port in (("tcp", tcp_login, server.port),
                                          ("websocket", ws_login, http)):
                    offset = (r * 2 + (kind == "websocket")) * a.clients
                    rate, cpu = asyncio.run(batch(login, port, a.clients, a.concurrency, offset,
                                                  server.proc.pid))
                    results[kind].append(rate)
                    print(f"round {r + 1} {kind:9s} {rate:8.1f} logins/s  (server cpu {cpu:.0%})",
                          flush=True)
        finally:
            server.stop()
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(f"median: TCP {med['tcp']:.1f} logins/s, WebSocket {med['websocket']:.1f} logins/s "
          f"(WebSocket/TCP {med['websocket'] / med['tcp']:.2f})")


if __name__ == "__main__":
    main()
