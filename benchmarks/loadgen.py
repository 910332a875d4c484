"""An XMPP load generator: many clients, pre-serialised bytes, counting instead of parsing.

It drives any server on 127.0.0.1:PORT with accounts ``user1..userN@DOMAIN`` / ``password``
and runs one *group* of the scenarios of issue 6 per invocation, printing the figures as
JSON (one object per line, prefixed ``FIGURE``) so that ``benchmarks.compare`` can run each
group against a freshly started server. Every figure carries the server's and the
generator's CPU use over the measured window (from /proc and ``os.times``), so a reader can
see that the generator had headroom.

Why it looks the way it does: a Python XMPP client library (slixmpp) spends far more CPU per
stanza than the server under test, so the generator would be the bottleneck. Here stanzas
are byte templates, login steps wait for a fixed marker (``</stream:features>``,
``<success``, an iq id...), and traffic is measured by counting ``</message>`` in the
received bytes (a body cannot contain a literal ``<``, so the count is exact). Chunk
boundaries are handled by keeping the last few bytes of the previous chunk.

Groups::

    login   logins/s with real stored accounts: PLAIN and, with --scram, SCRAM-SHA-256 and
            SCRAM-SHA-1 (each only if the server offers it), over plaintext and STARTTLS;
            server RSS after 20 warm-up logins, memory per idle authenticated connection.
            SCRAM clients cache SaltedPassword per (hash, salt, iterations) as real clients do,
            so the generator pays PBKDF2 once, not per login.
    chat    1:1 chat delivered/s (pairs, a window of messages in flight per direction)
    mucfill MUC joins/s while filling rooms, memory per occupant
    muc     MUC groupchat delivered/s (10 % of occupants send, each waits for its own echo),
            optionally followed by the delivery latency at a fixed offered rate
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import ssl
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
END_MSG = b"</message>"
FAILURES = (b"<failure", b"<stream:error", b"</stream:stream>", b"type='error'", b'type="error"')
NS_MUC = "http://jabber.org/protocol/muc"


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its reaped children."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime, stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def run_wait(pid: int | str) -> float:
    """Seconds the process spent runnable but waiting for a CPU (other load on a shared machine)."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Window:
    """Wall time and CPU of the server and of this generator between start() and stop()."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid

    def _snap(self):
        scpu = proc_cpu(self.server_pid) if self.server_pid else 0.0
        swait = run_wait(self.server_pid) if self.server_pid else 0.0
        return time.monotonic(), scpu, own_cpu(), swait, run_wait("self")

    def start(self):
        print("PHASE start", flush=True)  # lets benchmarks.profile sample only measured windows
        self.t0, self.s0, self.g0, self.sw0, self.gw0 = self._snap()
        return self

    def stop(self):
        self.t1, self.s1, self.g1, self.sw1, self.gw1 = self._snap()
        self.elapsed = self.t1 - self.t0
        return self

    def cpu(self) -> dict:
        dt = self.elapsed or 1e-9
        out = {"seconds": round(dt, 3), "gen_cpu": round(100 * (self.g1 - self.g0) / dt, 1),
               "gen_wait": round(100 * (self.gw1 - self.gw0) / dt, 1)}
        if self.server_pid:
            out["server_cpu"] = round(100 * (self.s1 - self.s0) / dt, 1)
            # % of the window the server was ready to run but its core was busy with something else
            out["server_wait"] = round(100 * (self.sw1 - self.sw0) / dt, 1)
        return out


def emit(key: str, value: float, unit: str, win: Window | None = None, **extra):
    """Print one figure as a JSON line for benchmarks.compare (and a readable line to stderr)."""
    fig = {"key": key, "value": round(value, 2), "unit": unit}
    if win is not None:
        fig.update(win.cpu())
    fig.update(extra)
    print("FIGURE " + json.dumps(fig), flush=True)
    cpu = ""
    if win is not None:
        c = win.cpu()
        cpu = (f"  (server cpu {c.get('server_cpu', '?')}% waited {c.get('server_wait', '?')}%, "
               f"generator cpu {c['gen_cpu']}% waited {c['gen_wait']}%, {c['seconds']} s)")
    print(f"  {key:<22} {value:>12,.1f} {unit}{cpu}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the client


class ClientError(Exception):
    pass


class Client(asyncio.Protocol):
    """One XMPP connection. Login steps wait for byte markers; hot loops set ``on_data``."""

    def __init__(self, gen: "Generator", idx: int):
        self.gen = gen
        self.idx = idx
        self.transport = None
        self.buf = bytearray()
        self.marker = b""
        self.waiter: asyncio.Future | None = None
        self.on_data = None
        self.lost = gen.loop.create_future()
        self.tail = b""
        self.nick = f"n{idx}"

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.on_data is not None:
            self.on_data(data)
            return
        self.buf += data
        if self.waiter is not None:
            self._check()

    def connection_lost(self, exc):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ClientError(
                f"user{self.idx}: connection lost waiting for {self.marker!r}; got {bytes(self.buf[:300])!r}"))
        if not self.lost.done():
            self.lost.set_result(None)

    # login helpers
    def _check(self):
        i = self.buf.find(self.marker)
        if i >= 0:
            end = i + len(self.marker)
            chunk = bytes(self.buf[:end])
            del self.buf[:end]
            fut, self.waiter = self.waiter, None
            if not fut.done():
                fut.set_result(chunk)
            return
        for bad in FAILURES:
            if bad in self.buf:
                fut, self.waiter = self.waiter, None
                if not fut.done():
                    fut.set_exception(ClientError(
                        f"user{self.idx}: waiting for {self.marker!r}, got {bytes(self.buf[:400])!r}"))
                return

    def expect(self, marker: bytes, timeout: float = 30.0):
        self.marker = marker
        self.waiter = self.gen.loop.create_future()
        if self.buf:
            self._check()
        return asyncio.wait_for(self.waiter, timeout)

    def send(self, data: bytes):
        self.transport.write(data)

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"</stream:stream>")
            self.transport.close()


class Generator:
    def __init__(self, args):
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.domain = args.host, args.port, args.domain
        self.muc = args.muc_domain or "conference." + args.domain
        self.header = (f"<?xml version='1.0'?><stream:stream to='{self.domain}' xmlns='jabber:client' "
                       "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()
        self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ssl.check_hostname = False
        self.ssl.verify_mode = ssl.CERT_NONE
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
        self.salted = {}   # (hash, salt b64, iterations) -> (ClientKey, StoredKey): one PBKDF2 each
        self.offered = None  # mechanisms in the first stream features seen
        self.delivered = 0
        self.sent = 0      # messages sent by the traffic loops
        self.errors = 0    # type='error' stanzas seen during traffic (a broken server is not fast)
        self.running = True

    def jid(self, idx: int) -> str:
        return f"user{idx}@{self.domain}/b"

    async def login(self, idx: int, tls: bool = False, mech: str = "PLAIN") -> Client:
        """connect, stream, [STARTTLS], SASL (PLAIN or SCRAM), bind, initial presence (acked by a ping)."""
        _, c = await self.loop.create_connection(lambda: Client(self, idx), self.host, self.port)
        try:
            c.send(self.header)
            features = await c.expect(b"</stream:features>")
            if self.offered is None:
                self.offered = set(re.findall(rb"<mechanism>([^<]+)</mechanism>", features))
            if tls:
                c.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                await c.expect(b"<proceed")
                c.buf.clear()
                c.transport = await self.loop.start_tls(c.transport, c, self.ssl, server_hostname=self.domain)
                c.send(self.header)
                await c.expect(b"</stream:features>")
            if mech == "PLAIN":
                cred = base64.b64encode(f"\0user{idx}\0{self.args.password}".encode())
                c.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + cred + b"</auth>")
            else:
                await self.scram(c, idx, mech)
            await c.expect(b"<success")
            c.buf.clear()
            c.send(self.header)
            await c.expect(b"</stream:features>")
            c.send(b"<iq type='set' id='bnd1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   b"<resource>b</resource></bind></iq>")
            await c.expect(b"</iq>")
            # The presence is processed before the ping (in order), so the ping's answer marks
            # the end of the login; neither server echoes initial presence to a lone resource.
            c.send(b"<presence/><iq type='get' id='pgx1'><ping xmlns='urn:xmpp:ping'/></iq>")
            await c.expect(b"pgx1")
            c.buf.clear()
            return c
        except BaseException:
            c.transport.abort()
            raise

    async def scram(self, c: Client, idx: int, mech: str):
        """RFC 5802 client side up to the client-final message; the caller waits for <success."""
        h = "sha256" if mech == "SCRAM-SHA-256" else "sha1"
        first_bare = f"n=user{idx},r={os.urandom(12).hex()}"
        c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>"
               f"{base64.b64encode(('n,,' + first_bare).encode()).decode()}</auth>".encode())
        chunk = await c.expect(b"</challenge>")
        server_first = base64.b64decode(chunk[chunk.index(b">") + 1:chunk.rindex(b"<")]).decode()
        attrs = dict(a.split("=", 1) for a in server_first.split(","))
        key = (h, attrs["s"], attrs["i"])
        keys = self.salted.get(key)
        if keys is None:
            salted = hashlib.pbkdf2_hmac(h, self.args.password.encode(), base64.b64decode(attrs["s"]),
                                         int(attrs["i"]))
            client_key = hmac.digest(salted, b"Client Key", h)
            keys = self.salted[key] = (client_key, hashlib.new(h, client_key).digest())
        client_key, stored_key = keys
        without_proof = f"c=biws,r={attrs['r']}"
        sig = hmac.digest(stored_key, f"{first_bare},{server_first},{without_proof}".encode(), h)
        proof = (int.from_bytes(client_key, "big") ^ int.from_bytes(sig, "big")).to_bytes(len(sig), "big")
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        c.send(b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
               + base64.b64encode(final.encode()) + b"</response>")

    async def login_many(self, idxs, concurrency: int, tls: bool = False, mech: str = "PLAIN"):
        sem = asyncio.Semaphore(concurrency)

        async def one(i):
            async with sem:
                return await self.login(i, tls, mech)

        results = await asyncio.gather(*(one(i) for i in idxs), return_exceptions=True)
        clients = [r for r in results if isinstance(r, Client)]
        errors = [r for r in results if not isinstance(r, Client)]
        if errors:
            print(f"  {len(errors)} logins failed, first: {errors[0]!r}", file=sys.stderr)
        return clients, len(errors)

    async def close_all(self, clients, settle: float = 1.0):
        for c in clients:
            c.on_data = _discard
            c.close()
        if clients:
            await asyncio.wait([c.lost for c in clients], timeout=10)
        await asyncio.sleep(settle)

    # MUC
    def room(self, prefix: str, r: int) -> str:
        return f"{prefix}{r}@{self.muc}"

    async def join(self, c: Client, room: str, create: bool = False):
        c.send(f"<presence to='{room}/{c.nick}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x>"
               "</presence>".encode())
        chunk = await c.expect(b"code='110'")
        if create and b"code='201'" in chunk:
            # A new room is locked until configured (XEP-0045 10.1.2): accept the defaults.
            c.send(f"<iq type='set' id='cfg1' to='{room}'><query xmlns='{NS_MUC}#owner'>"
                   "<x xmlns='jabber:x:data' type='submit'/></query></iq>".encode())
            await c.expect(b"cfg1")
        c.buf.clear()
        c.on_data = _discard

    async def fill(self, clients, rooms: int, per_room: int, concurrency: int, prefix: str):
        """Occupant j of room r is clients[r * per_room + j]; creators first, then round-robin."""
        assert len(clients) >= rooms * per_room, "not enough clients for the rooms"
        await asyncio.gather(*(self.join(clients[r * per_room], self.room(prefix, r), create=True)
                               for r in range(rooms)))
        sem = asyncio.Semaphore(concurrency)

        async def one(c, room):
            async with sem:
                await self.join(c, room)

        await asyncio.gather(*(one(clients[r * per_room + j], self.room(prefix, r))
                               for j in range(1, per_room) for r in range(rooms)))


def _discard(data):
    pass


# ---------------------------------------------------------------------------------------------
# counting handlers


def counting(gen: Generator, c: Client):
    """on_data that adds every received </message> to gen.delivered."""
    c.tail = b""

    def on_data(data):
        d = c.tail + data
        gen.delivered += d.count(END_MSG) - c.tail.count(END_MSG)
        if b"type='error'" in d or b'type="error"' in d:
            gen.errors += d.count(b"type='error'") + d.count(b'type="error"')
        c.tail = d[-9:]
    return on_data


def echo_sender(gen: Generator, c: Client, room: str, body: str):
    """Count deliveries; send the next groupchat message as soon as our own echo is back."""
    head = f"<message to='{room}' type='groupchat'><body>{body} ~".encode()
    tail_bytes = b"~</body></message>"
    c.tail = b""
    c.seq = 0
    c.token = b"%d.%d~" % (c.idx, c.seq)

    def send_next():
        gen.sent += 1
        c.seq += 1
        c.token = b"%d.%d~" % (c.idx, c.seq)
        c.transport.write(head + c.token[:-1] + tail_bytes)

    def on_data(data):
        d = c.tail + data
        gen.delivered += d.count(END_MSG) - c.tail.count(END_MSG)
        if b"type='error'" in d or b'type="error"' in d:
            gen.errors += d.count(b"type='error'") + d.count(b'type="error"')
        if b"~" + c.token in d:
            if gen.running:
                send_next()
            else:
                c.token = b"\0"  # stop: nothing in flight any more
        c.tail = d[-40:]
    c.send_next = send_next
    return on_data


LAT_RX = re.compile(rb"@(\d{6,})@")


# ---------------------------------------------------------------------------------------------
# scenario groups


async def measure_rate(gen: Generator, warmup: float, duration: float, server_pid):
    await asyncio.sleep(warmup)
    n0, s0, e0 = gen.delivered, gen.sent, gen.errors
    w = Window(server_pid).start()
    await asyncio.sleep(duration)
    n1, s1, e1 = gen.delivered, gen.sent, gen.errors
    w.stop()
    w.counts = {"delivered": n1 - n0, "sent": s1 - s0, "errors": e1 - e0}
    return (n1 - n0) / w.elapsed, w, n1 - n0


async def group_login(gen: Generator, a):
    idxs = range(a.first, a.first + a.clients)
    await asyncio.sleep(0.5)
    # 20 warm-up logins (every mechanism measured below), then the idle reading.
    warm = range(a.first, a.first + 20)
    for i, mech in enumerate(["PLAIN"] + (["SCRAM-SHA-256", "SCRAM-SHA-1"] if a.scram else [])):
        if mech == "PLAIN" or gen.offered is None or mech.encode() in gen.offered:
            clients, _ = await gen.login_many(warm[i::3] if a.scram else warm, a.concurrency, mech=mech)
            await gen.close_all(clients, 0)
    await asyncio.sleep(a.settle)
    rss0 = rss_kb(a.server_pid) if a.server_pid else None
    if rss0 is not None:
        emit("rss_idle", rss0 / 1024, "MB", None, after_warmup_logins=20)
    w = Window(a.server_pid).start()
    clients, failed = await gen.login_many(idxs, a.concurrency)
    w.stop()
    emit("logins_plain", len(clients) / w.elapsed, "logins/s", w, clients=len(clients), failed=failed,
         in_flight=a.concurrency)
    if rss0 is not None:
        await asyncio.sleep(a.settle)
        rss1 = rss_kb(a.server_pid)
        emit("mem_idle_conn", (rss1 - rss0) / max(1, len(clients)), "KB/conn", None,
             rss_before_kb=rss0, rss_after_kb=rss1, clients=len(clients))
        await asyncio.sleep(a.hold)
    await gen.close_all(clients, a.settle)
    if not a.no_tls:
        w = Window(a.server_pid).start()
        clients, failed = await gen.login_many(idxs, a.concurrency, tls=True)
        w.stop()
        emit("logins_tls", len(clients) / w.elapsed, "logins/s", w, clients=len(clients), failed=failed,
             in_flight=a.concurrency)
        await gen.close_all(clients, 0.2)
    if a.scram:
        rounds = [("logins_scram_sha256", "SCRAM-SHA-256", False), ("logins_scram_sha1", "SCRAM-SHA-1", False)]
        if not a.no_tls:
            rounds.append(("logins_scram_sha256_tls", "SCRAM-SHA-256", True))
        for key, mech, tls in rounds:
            if mech.encode() not in (gen.offered or ()):
                print(f"  {key}: the server does not offer {mech}; skipped", file=sys.stderr)
                continue
            w = Window(a.server_pid).start()
            clients, failed = await gen.login_many(idxs, a.concurrency, tls=tls, mech=mech)
            w.stop()
            emit(key, len(clients) / w.elapsed, "logins/s", w, clients=len(clients), failed=failed,
                 in_flight=a.concurrency)
            await gen.close_all(clients, 0.2)


async def group_chat(gen: Generator, a):
    pairs = a.pairs
    clients, failed = await gen.login_many(range(a.first, a.first + 2 * pairs), a.concurrency)
    if failed:
        raise SystemExit("logins failed")
    msgs = {}
    for k in range(pairs):
        x, y = clients[2 * k], clients[2 * k + 1]
        x.partner, y.partner = y, x
    body = "Hello! This is a 1:1 benchmark message of a typical size, &amp; a bit more text."
    for c in clients:
        # c.msg is what c sends (to its partner); the partner's handler refills c's window.
        msgs[c.idx] = c.msg = (f"<message to='{gen.jid(c.partner.idx)}' type='chat'>"
                               f"<body>{body}</body></message>").encode()

    def handler(c):
        c.tail = b""
        p = c.partner

        def on_data(data):
            d = c.tail + data
            n = d.count(END_MSG) - c.tail.count(END_MSG)
            c.tail = d[-9:]
            if n:
                gen.delivered += n
                if b"type='error'" in d or b'type="error"' in d:
                    gen.errors += d.count(b"type='error'") + d.count(b'type="error"')
                if gen.running:
                    gen.sent += n
                    p.transport.write(p.msg * n)
        return on_data

    for c in clients:
        c.on_data = handler(c)
    for c in clients:
        c.transport.write(c.msg * a.window)
    rate, w, n = await measure_rate(gen, a.warmup, a.duration, a.server_pid)
    gen.running = False
    emit("chat_delivered", rate, "msg/s", w, pairs=pairs, window=a.window, **w.counts)
    await asyncio.sleep(0.5)
    await gen.close_all(clients, 0.2)


async def group_mucfill(gen: Generator, a):
    n = a.rooms * a.per_room
    clients, failed = await gen.login_many(range(a.first, a.first + n), a.concurrency)
    if failed:
        raise SystemExit("logins failed")
    await asyncio.sleep(a.settle)
    rss0 = rss_kb(a.server_pid) if a.server_pid else None
    w = Window(a.server_pid).start()
    await gen.fill(clients, a.rooms, a.per_room, a.join_concurrency, a.prefix)
    w.stop()
    emit("muc_joins", n / w.elapsed, "joins/s", w, rooms=a.rooms, per_room=a.per_room,
         in_flight=a.join_concurrency)
    if rss0 is not None:
        await asyncio.sleep(a.settle)
        rss1 = rss_kb(a.server_pid)
        emit("mem_occupant", (rss1 - rss0) / n, "KB/occupant", None, rss_before_kb=rss0,
             rss_after_kb=rss1, occupants=n)
        await asyncio.sleep(a.hold)
    await gen.close_all(clients, 0.2)


async def group_muc(gen: Generator, a):
    n = a.rooms * a.per_room
    clients, failed = await gen.login_many(range(a.first, a.first + n), a.concurrency)
    if failed:
        raise SystemExit("logins failed")
    await gen.fill(clients, a.rooms, a.per_room, a.join_concurrency, a.prefix)
    await asyncio.sleep(a.settle)
    if not a.skip_traffic:
        await muc_traffic(gen, a, clients)
    if a.latency_rate:
        await latency(gen, a, clients[:n])
    await gen.close_all(clients, 0.2)


async def muc_traffic(gen: Generator, a, clients):
    senders = []
    body = "Hello room! A groupchat benchmark message of a typical size, &amp; some more text"
    for r in range(a.rooms):
        room = gen.room(a.prefix, r)
        for j in range(a.per_room):
            c = clients[r * a.per_room + j]
            if j % round(1 / a.sender_fraction) == 0:
                c.on_data = echo_sender(gen, c, room, body)
                senders.append(c)
            else:
                c.on_data = counting(gen, c)
    for c in senders:
        c.send_next()
    rate, w, delivered = await measure_rate(gen, a.warmup, a.duration, a.server_pid)
    gen.running = False
    tag = a.tag or f"{a.rooms}x{a.per_room}"
    emit(f"muc_{tag}_delivered", rate, "msg/s", w, rooms=a.rooms, per_room=a.per_room,
         senders=len(senders), **w.counts)
    await asyncio.sleep(1.0)  # let the last echoes arrive
    for c in clients:
        c.on_data = _discard


async def latency(gen: Generator, a, clients):
    """Offer latency_rate deliveries/s to rooms[0] (one message = per_room deliveries).

    The receive side bypasses asyncio: its per-event cost (~15 us) times 200 sockets made
    readable by one message would add milliseconds of the generator's own queueing to the
    figure. Here the sockets are detached from the loop and read in a bare epoll loop that
    timestamps each read right after it returns (~2 us per socket).
    """
    room = gen.room(a.prefix, 0)
    occupants = clients[:a.per_room]
    msg_rate = a.latency_rate / a.per_room
    count = max(1, int(a.duration * msg_rate))
    fds = []
    for c in occupants:
        c.transport.pause_reading()
        fds.append(c.transport.get_extra_info("socket").fileno())
    await asyncio.sleep(0.2)
    w = Window(a.server_pid).start()
    samples = probe_latency(fds, room, msg_rate, count, drain=1.0)
    w.stop()
    for c in occupants:
        c.transport.resume_reading()
    if not samples:
        raise SystemExit("no latency samples received")
    samples.sort()
    pct = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))] / 1e6  # noqa: E731
    emit(f"muc_{a.tag or f'{a.rooms}x{a.per_room}'}_p99", pct(0.99), "ms", w, offered=a.latency_rate,
         samples=len(samples), expected=count * a.per_room, p50_ms=round(pct(0.5), 2),
         max_ms=round(samples[-1] / 1e6, 2))


def probe_latency(fds, room, msg_rate, count, drain):
    """Send ``count`` probes at ``msg_rate`` from the fds in turn; return delivery latencies (ns)."""
    import select
    ep = select.epoll()
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    tails = dict.fromkeys(fds, b"")
    samples = []
    interval = 1.0 / msg_rate
    head = f"<message to='{room}' type='groupchat'><body>latency probe @".encode()
    start = time.monotonic()
    sent = 0
    try:
        while True:
            now = time.monotonic()
            if sent < count and now >= start + sent * interval:
                os.write(fds[sent % len(fds)], head + b"%d@</body></message>" % time.monotonic_ns())
                sent += 1
                continue
            if sent >= count:
                if now > start + (count - 1) * interval + drain:
                    break
                timeout = start + (count - 1) * interval + drain - now
            else:
                timeout = start + sent * interval - now
            for fd, _ in ep.poll(max(0.0, timeout)):
                try:
                    data = os.read(fd, 262144)
                except BlockingIOError:
                    continue
                t = time.monotonic_ns()
                d = tails[fd] + data
                last = d.rfind(END_MSG)
                if last < 0:
                    tails[fd] = d
                    continue
                tails[fd] = d[last + len(END_MSG):]
                for m in LAT_RX.finditer(d, 0, last):
                    samples.append(t - int(m.group(1)))
    finally:
        ep.close()
    return samples


async def group_mamquery(gen: Generator, a):
    """Page backwards through user<first>'s archive, one page of ``--page`` per query (XEP-0313).

    The archive is filled beforehand (benchmarks.servers.prepare_archive). Each query asks
    for the page before the previous one's <first/> (the way a client scrolls up), from the
    newest page; at the oldest page it starts again from the newest. Latency = send to the
    end of the answering IQ (every result message arrived before it).
    """
    clients, failed = await gen.login_many([a.first], 1)
    if failed:
        raise SystemExit("login failed")
    c = clients[0]
    first_rx = re.compile(rb"<first>([^<]+)</first>")
    samples, results, before = [], 0, ""
    w = Window(a.server_pid).start()
    for i in range(a.queries):
        anchor = f"<before>{before}</before>" if before else "<before/>"
        t0 = time.perf_counter()
        c.send(f"<iq type='set' id='mq{i}'><query xmlns='urn:xmpp:mam:2' queryid='q{i}'>"
               f"<set xmlns='http://jabber.org/protocol/rsm'><max>{a.page}</max>{anchor}</set>"
               "</query></iq>".encode())
        chunk = await c.expect(b"</iq>")
        samples.append(time.perf_counter() - t0)
        results += chunk.count(b"<result ")
        if b"type='error'" in chunk:
            raise SystemExit(f"query failed: {chunk[-300:]!r}")
        m = first_rx.search(chunk)
        before = "" if (m is None or b"complete='true'" in chunk) else m.group(1).decode()
    w.stop()
    samples.sort()
    pct = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))] * 1000  # noqa: E731
    if results < a.queries * a.page * 0.9:
        raise SystemExit(f"only {results} results for {a.queries} pages of {a.page}: is the archive filled?")
    emit("mam_page_p95", pct(0.95), "ms", w, queries=a.queries, page=a.page, results=results,
         p50_ms=round(pct(0.5), 2), max_ms=round(samples[-1] * 1000, 2))
    await gen.close_all(clients, 0.2)


GROUPS = {"login": group_login, "chat": group_chat, "mucfill": group_mucfill, "muc": group_muc,
          "mamquery": group_mamquery}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group", choices=sorted(GROUPS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--muc-domain")
    p.add_argument("--password", default="password")
    p.add_argument("--server-pid", type=int, help="read the server's CPU and RSS from /proc")
    p.add_argument("--first", type=int, default=1, help="first account number (user<first>)")
    p.add_argument("--clients", type=int, default=2000, help="login: clients to log in")
    p.add_argument("--concurrency", type=int, default=100, help="logins in flight")
    p.add_argument("--no-tls", action="store_true", help="login: skip the STARTTLS rounds")
    p.add_argument("--scram", action="store_true",
                   help="login: also SCRAM-SHA-256 and SCRAM-SHA-1 rounds (when the server offers them)")
    p.add_argument("--pairs", type=int, default=100, help="chat: sender/receiver pairs")
    p.add_argument("--window", type=int, default=10, help="chat: messages in flight per direction")
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--per-room", type=int, default=100)
    p.add_argument("--join-concurrency", type=int, default=50, help="MUC joins in flight")
    p.add_argument("--prefix", default="bench", help="room name prefix")
    p.add_argument("--tag", help="muc: name figures muc_<tag>_... (default <rooms>x<per-room>)")
    p.add_argument("--sender-fraction", type=float, default=0.1)
    p.add_argument("--latency-rate", type=float, default=0,
                   help="muc: afterwards offer this many deliveries/s to the first room and report p99")
    p.add_argument("--skip-traffic", action="store_true", help="muc: only fill (and --latency-rate)")
    p.add_argument("--queries", type=int, default=300, help="mamquery: archive pages to fetch")
    p.add_argument("--page", type=int, default=50, help="mamquery: results per page (RSM max)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured window")
    p.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    p.add_argument("--hold", type=float, default=0,
                   help="seconds to keep the clients connected after a memory reading (for benchmarks.memprofile)")
    p.add_argument("--timeout", type=float, default=300, help="hard limit for the whole group")
    return p.parse_args(argv)


async def amain(a):
    gen = Generator(a)
    await asyncio.wait_for(GROUPS[a.group](gen, a), a.timeout)


def main(argv=None):
    a = parse_args(argv)
    try:
        import uvloop  # optional: a faster event loop leaves more headroom
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(amain(a))


if __name__ == "__main__":
    main()
