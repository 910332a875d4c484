"""Soak test: many STARTTLS connections with real accounts and a mixed load for a long time.

    python -m benchmarks.soak                     # 5 000 clients, 200 rooms, 10 minutes
    python -m benchmarks.soak --clients 2000 --duration 300 --out /tmp/soak   # smaller
    flock /tmp/bench.lock python -m benchmarks.soak ...   # on a shared machine

Not a CI test: it loads the machine for the whole run. It writes ``SOAK.md`` and ``soak.png``
(RSS, reactor lag and traffic over time, matplotlib) into ``--out`` (default benchmarks/).

What runs: accounts ``user1..userN`` are created with SCRAM keys (as ``xmppdctl adduser``
does), a fresh xmppd starts with /metrics on a loopback port, every client logs in over
STARTTLS (TLS 1.3) with SASL PLAIN, binds and sends presence. ``--rooms`` rooms get
``--per-room`` occupants each; the other clients form 1:1 pairs. Then, for ``--duration``
seconds, at fixed rates: groupchat messages from random occupants, chat messages between
partners, an occupant leaving and rejoining its room, a paired client disconnecting and
logging in again (its partner pauses while it is away, as a client without stream management
must). Every message body carries ``sender:sequence``; receivers check that each sender's
sequence has no gap and no duplicate (for a room, while the receiver is continuously in it),
and at the end every sent message must have arrived: *lost* counts what did not. Before the
load starts, each room's history (a bounded store) is filled (``--prefill``), so that what the
RSS window measures is the steady state rather than rooms filling up.

Every ``--sample`` seconds: the server's RSS (/proc), its reactor lag and GC pause histograms
and counters (/metrics), its CPU and the time it was runnable but waiting for a CPU
(/proc/PID/schedstat), and the machine's load average. Pass criteria (issue 16): RSS drift
after warm-up under 5 %, zero errors, zero lost messages, reactor lag p99 under 50 ms (over all
samples after warm-up; the worst 10 s window and the longest lag are reported beside it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks import servers
from benchmarks.loadgen import Client, ClientError, Generator, proc_cpu, rss_kb, run_wait

BODY = re.compile(rb"<body>([cg])(\d+):(\d+)</body>")
ERRORS = (b"type='error'", b'type="error"', b"<stream:error")
HERE = Path(__file__).resolve().parent


class Tracker:
    """Sequence bookkeeping for one receiving client index (survives its reconnects)."""

    __slots__ = ("chat_last", "room_last", "tail")

    def __init__(self):
        self.chat_last = {}      # sender idx -> last chat seq seen
        self.room_last = {}      # sender idx -> last groupchat seq seen (reset on rejoin)
        self.tail = b""


class Soak:
    def __init__(self, gen: Generator, a):
        self.gen, self.a = gen, a
        self.rng = random.Random(a.seed)
        self.clients: dict[int, Client] = {}
        self.track = {i: Tracker() for i in range(1, a.clients + 1)}
        self.errors = 0
        self.error_samples = []
        self.lost = 0
        self.dups = 0
        self.sent_chat = {}          # sender -> seq sent to its partner
        self.sent_room = {}          # sender -> seq sent to its room
        self.echo_pending = {}       # sender -> own groupchat messages not echoed yet
        self.delivered = 0
        self.counts = {"groupchat": 0, "chat": 0, "rejoins": 0, "reconnects": 0}
        occupants = a.rooms * a.per_room
        self.members = list(range(1, occupants + 1))
        self.room_of = {i: (i - 1) // a.per_room for i in self.members}
        self.in_room = set()
        pairs = list(range(occupants + 1, a.clients + 1))
        self.partner = {}
        for k in range(0, len(pairs) - 1, 2):
            self.partner[pairs[k]], self.partner[pairs[k + 1]] = pairs[k + 1], pairs[k]
        self.online = set()
        self.busy = set()

    def room(self, i):
        return self.gen.room("soak", self.room_of[i])

    # -- receiving ---------------------------------------------------------
    def attach(self, i, c: Client):
        t = self.track[i]

        def on_data(data, t=t, i=i):
            buf = t.tail + data
            for bad in ERRORS:
                if bad in buf:
                    self.errors += 1
                    if len(self.error_samples) < 5:
                        self.error_samples.append(bytes(buf[:600]))
            last_end = 0
            for m in BODY.finditer(buf):
                kind, sender, seq = m.group(1), int(m.group(2)), int(m.group(3))
                last_end = m.end()
                self.delivered += 1
                table = t.chat_last if kind == b"c" else t.room_last
                prev = table.get(sender)
                if kind == b"g" and sender == i:
                    self.echo_pending[i] = self.echo_pending.get(i, 1) - 1
                if prev is None:
                    if kind == b"c" and seq != 1:
                        self.lost += seq - 1
                elif seq == prev + 1:
                    pass
                elif seq <= prev:
                    self.dups += 1
                else:
                    self.lost += seq - prev - 1
                table[sender] = seq
            rest = buf[last_end:]
            cut = rest.rfind(b"<body>")
            t.tail = rest[cut:] if cut >= 0 else rest[-8:]
        c.on_data = on_data

    # -- actions -----------------------------------------------------------
    async def connect(self, i):
        c = await self.gen.login(i, tls=True)
        self.clients[i] = c
        return c

    async def join(self, i):
        c = self.clients[i]
        c.on_data = None
        c.buf.clear()
        self.track[i].room_last.clear()
        await self.gen.join(c, self.room(i), create=True)
        self.attach(i, c)
        self.in_room.add(i)

    async def leave_rejoin(self, i):
        """Leave and rejoin (the caller marked ``i`` busy and out of the room already)."""
        try:
            c = self.clients[i]
            c.send(f"<presence type='unavailable' to='{self.room(i)}/{c.nick}'/>".encode())
            await asyncio.sleep(0.5)
            await self.join(i)
            self.counts["rejoins"] += 1
        finally:
            self.busy.discard(i)

    async def reconnect(self, i):
        """Log out and in again (the caller marked ``i`` busy and offline already)."""
        try:
            await asyncio.sleep(1.0)        # messages already on their way arrive first
            c = self.clients.pop(i)
            c.close()
            await asyncio.wait_for(c.lost, 10)
            c = await self.connect(i)
            self.attach(i, c)
            self.online.add(i)
            self.counts["reconnects"] += 1
        finally:
            self.busy.discard(i)

    def send_groupchat(self):
        if not self.in_room:
            return
        i = self.rng.choice(self.members)
        if i not in self.in_room or i in self.busy:
            return
        seq = self.sent_room[i] = self.sent_room.get(i, 0) + 1
        self.echo_pending[i] = self.echo_pending.get(i, 0) + 1
        self.clients[i].send(f"<message type='groupchat' to='{self.room(i)}'><body>g{i}:{seq}"
                             "</body></message>".encode())
        self.counts["groupchat"] += 1

    def send_chat(self):
        if not self.partner:
            return
        i = self.rng.choice(list(self.partner))
        j = self.partner[i]
        if i not in self.online or j not in self.online or i in self.busy:
            return
        seq = self.sent_chat[i] = self.sent_chat.get(i, 0) + 1
        self.clients[i].send(f"<message type='chat' to='user{j}@{self.gen.domain}/b'><body>c{i}:{seq}"
                             "</body></message>".encode())
        self.counts["chat"] += 1

    async def ticker(self, rate, fn, stop):
        """Call ``fn`` ``rate`` times a second in 50 ms batches until ``stop`` is set."""
        interval = 0.05
        carry = 0.0
        while not stop.is_set():
            carry += rate * interval
            n, carry = int(carry), carry - int(carry)
            for _ in range(n):
                r = fn()
                if asyncio.iscoroutine(r):
                    asyncio.ensure_future(r)
            await asyncio.sleep(interval)

    def churn_one_room(self):
        candidates = [i for i in self.rng.sample(self.members, min(10, len(self.members)))
                      if i in self.in_room and i not in self.busy and not self.echo_pending.get(i)]
        if candidates:
            i = candidates[0]
            self.busy.add(i)
            self.in_room.discard(i)
            return self.leave_rejoin(i)

    def reconnect_one(self):
        if not self.partner:
            return None
        i = self.rng.choice(list(self.partner))
        if i in self.busy or i not in self.online or self.partner[i] in self.busy:
            return None
        self.busy.add(i)
        self.online.discard(i)          # the partner stops sending to us
        return self.reconnect(i)

    # -- final accounting -------------------------------------------------
    def final_check(self):
        lost = 0
        for i, sent in self.sent_chat.items():
            j = self.partner[i]
            lost += sent - self.track[j].chat_last.get(i, 0)
        for i in self.members:
            lost += max(0, self.echo_pending.get(i, 0))
        return lost


SERVER_CONFIG = "max_offline_messages = 1000\nmuc_max_rooms_per_creator = 0\n"


class ExternalServer:
    def __init__(self, port, pid):
        self.port, self.pid = port, pid

    def stop(self):
        pass


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("" if not s.labels else json.dumps(s.labels, sort_keys=True))
            out[key] = s.value
    return out


def loadavg():
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def lag_quantile(before, after, q=0.99, name="xmppd_reactor_lag_seconds", labels=None):
    """Quantile (upper bucket bound, seconds) of a histogram's samples between two scrapes,
    and the number of samples (``labels``: only the series with these labels)."""
    buckets = []
    prefix = name + "_bucket"
    for key, v in after.items():
        if key.startswith(prefix):
            lab = json.loads(key[len(prefix):])
            if labels and any(lab.get(k) != v2 for k, v2 in labels.items()):
                continue
            buckets.append((float(lab["le"]), v - before.get(key, 0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return 0.0, 0
    for le, n in buckets:
        if n >= q * total:
            return le, int(total)
    return float("inf"), int(total)


def gc_window(before, after):
    """Full (generation 2) collections between two scrapes: count, longest (bucket bound, s)."""
    key = 'xmppd_gc_pause_seconds_count{"generation": "2"}'
    n = int(after.get(key, 0) - before.get(key, 0))
    if not n:
        return 0, 0.0
    return n, lag_quantile(before, after, 1.0, "xmppd_gc_pause_seconds", {"generation": "2"})[0]


async def run(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.clients * 2 + 1000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if a.server:
        # an xmppd started by the caller (benchmarks.memprofile soak: in-process, tracemalloc),
        # with the accounts and the soak's settings already in place
        host, port = a.server.rsplit(":", 1)
        server = ExternalServer(int(port), a.server_pid)
        mport, work = a.metrics_port, None
    else:
        work = Path(tempfile.mkdtemp(prefix="xmppd-soak-"))
        print(f"soak: preparing {a.clients} accounts in {work}", flush=True)
        servers.prepare_xmppd(work, a.clients)
        mport = servers.free_port()
        conf = work / "soak.toml"
        conf.write_text(f"metrics_port = {mport}\n" + SERVER_CONFIG)
        server = servers.start_xmppd(work, None, ["--config", str(conf)])
    print(f"soak: server pid {server.pid} port {server.port}", flush=True)
    args = argparse.Namespace(host="127.0.0.1", port=server.port, domain="localhost",
                              muc_domain=None, password=servers.PASSWORD)
    gen = Generator(args)
    soak = Soak(gen, a)
    samples = []
    result = {}
    try:
        t0 = time.monotonic()
        sem = asyncio.Semaphore(a.concurrency)

        async def login(i):
            async with sem:
                for attempt in range(3):
                    try:
                        c = await soak.connect(i)
                        soak.attach(i, c)
                        return
                    except (ClientError, OSError, asyncio.TimeoutError):
                        if attempt == 2:
                            raise
                        await asyncio.sleep(1)

        await asyncio.gather(*(login(i) for i in range(1, a.clients + 1)))
        login_s = time.monotonic() - t0
        print(f"soak: {a.clients} STARTTLS logins in {login_s:.1f} s", flush=True)
        for i in soak.partner:
            soak.online.add(i)
        t1 = time.monotonic()
        creators = [r * a.per_room + 1 for r in range(a.rooms)]
        await asyncio.gather(*(soak.join(i) for i in creators))
        jsem = asyncio.Semaphore(50)

        async def join(i):
            async with jsem:
                await soak.join(i)
        await asyncio.gather(*(join(i) for i in soak.members if i not in set(creators)))
        print(f"soak: {len(soak.members)} occupants in {a.rooms} rooms in "
              f"{time.monotonic() - t1:.1f} s", flush=True)
        if a.prefill:
            # Fill every room's history (a bounded store: 20 messages by default) before the
            # clock starts, so the RSS window measures a steady state rather than the rooms
            # filling up (bodies outside the sequence format: receivers ignore them).
            t2 = time.monotonic()
            for r0 in range(0, a.rooms, 20):
                for r in range(r0, min(r0 + 20, a.rooms)):
                    c = soak.clients[creators[r]]
                    room = gen.room("soak", r)
                    c.send(b"".join(f"<message type='groupchat' to='{room}'><body>warm {k}</body>"
                                    f"</message>".encode() for k in range(a.prefill)))
                await asyncio.sleep(0.5)
            await asyncio.sleep(5)
            print(f"soak: {a.prefill} messages into each room's history in "
                  f"{time.monotonic() - t2:.1f} s", flush=True)

        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(soak.ticker(a.groupchat_rate, soak.send_groupchat, stop)),
                 asyncio.ensure_future(soak.ticker(a.chat_rate, soak.send_chat, stop)),
                 asyncio.ensure_future(soak.ticker(a.churn_rate, soak.churn_one_room, stop)),
                 asyncio.ensure_future(soak.ticker(a.reconnect_rate, soak.reconnect_one, stop))]
        start = time.monotonic()
        prev_m = metrics(mport)
        prev_delivered = 0
        prev_cpu, prev_wait, prev_t = proc_cpu(server.pid), run_wait(server.pid), time.monotonic()
        warm_m = None
        while True:
            await asyncio.sleep(a.sample)
            now = time.monotonic() - start
            m = metrics(mport)
            cpu, wait, t = proc_cpu(server.pid), run_wait(server.pid), time.monotonic()
            p99, n = lag_quantile(prev_m, m)
            lag_max, _ = lag_quantile(prev_m, m, 1.0)
            gcs, gc_max = gc_window(prev_m, m)
            s = {"t": round(now, 1), "rss_mb": rss_kb(server.pid) / 1024, "lag_p99_ms": p99 * 1000,
                 "lag_max_ms": lag_max * 1000, "lag_samples": n,
                 "gc_full": gcs, "gc_full_max_ms": gc_max * 1000,
                 "server_cpu_pct": round(100 * (cpu - prev_cpu) / (t - prev_t), 1),
                 "server_wait_pct": round(100 * (wait - prev_wait) / (t - prev_t), 1),
                 "load1": loadavg(), "sessions": m.get("xmppd_sessions"),
                 "occupants": m.get("xmppd_muc_occupants"),
                 "delivered_per_s": (soak.delivered - prev_delivered) / a.sample,
                 "errors": soak.errors, "lost": soak.lost}
            samples.append(s)
            prev_m, prev_delivered = m, soak.delivered
            prev_cpu, prev_wait, prev_t = cpu, wait, t
            print("soak: " + json.dumps(s), flush=True)
            if warm_m is None and now > a.warmup:
                warm_m = m          # the run-wide lag figures start here
                print("PHASE warm", flush=True)
            if now >= a.duration:
                break
        print("PHASE end", flush=True)
        if warm_m is None:
            warm_m = m
        lag_p99_run, lag_n_run = lag_quantile(warm_m, m)
        lag_p999_run, _ = lag_quantile(warm_m, m, 0.999)
        gc_full_run = gc_window(warm_m, m)
        stop.set()
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + 30
        while soak.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(a.drain)
        final_lost = soak.final_check()
        all_m = metrics(mport)
        # whole-run lag p99 (after warm-up, from the first post-warm-up scrape)
        result = {
            "clients": a.clients, "rooms": a.rooms, "per_room": a.per_room,
            "duration_s": a.duration, "login_s": round(login_s, 1), "counts": soak.counts,
            "delivered": soak.delivered, "errors": soak.errors, "error_samples":
                [e.decode("utf-8", "replace") for e in soak.error_samples],
            "lost_gaps": soak.lost, "lost_final": final_lost, "dups": soak.dups,
            "server_cpu_s": round(all_m.get("xmppd_process_cpu_seconds_total", 0), 1),
            "lag_p99_ms_run": lag_p99_run * 1000, "lag_p999_ms_run": lag_p999_run * 1000,
            "lag_samples_run": lag_n_run, "gc_full_run": gc_full_run[0],
            "gc_full_max_ms_run": gc_full_run[1] * 1000,
        }
    finally:
        for c in list(soak.clients.values()):
            c.on_data = lambda d: None
            if c.transport is not None:
                c.transport.abort()
        server.stop()
    return result, samples, work


def analyse(result, samples, a):
    warm = [s for s in samples if s["t"] > a.warmup] or samples
    base = warm[0]["rss_mb"]
    last = warm[-1]["rss_mb"]
    drift = (last - base) / base * 100
    # least-squares slope over the post-warm-up samples, as % of the mean over the window
    n = len(warm)
    if n > 1:
        xs = [s["t"] for s in warm]
        ys = [s["rss_mb"] for s in warm]
        mx, my = sum(xs) / n, sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        trend = slope * (xs[-1] - xs[0]) / my * 100
    else:
        trend = 0.0
    worst_window = max(s["lag_p99_ms"] for s in warm)
    p99 = result.get("lag_p99_ms_run", worst_window)
    result.update(rss_start_mb=round(base, 1), rss_end_mb=round(last, 1),
                  rss_max_mb=round(max(s["rss_mb"] for s in warm), 1),
                  rss_drift_pct=round(drift, 2), rss_trend_pct=round(trend, 2),
                  lag_p99_ms_worst_window=worst_window,
                  lag_max_ms=max(s.get("lag_max_ms", 0) for s in warm),
                  load1_mean=round(sum(s.get("load1", 0) for s in warm) / len(warm), 2),
                  load1_max=max(s.get("load1", 0) for s in warm),
                  server_wait_pct_mean=round(sum(s.get("server_wait_pct", 0) for s in warm)
                                             / len(warm), 1),
                  delivered_per_s=round(sum(s["delivered_per_s"] for s in warm) / len(warm)))
    result["pass"] = {
        "rss_drift_under_5pct": abs(drift) < 5,
        "zero_errors": result["errors"] == 0,
        "zero_lost": result["lost_gaps"] == 0 and result["lost_final"] == 0 and result["dups"] == 0,
        "lag_p99_under_50ms": p99 < 50,
    }
    return result


def plot(samples, path, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [s["rss_mb"] for s in samples], marker=".")
    axes[0].set_ylabel("server RSS (MiB)")
    for ax in axes:
        ax.axvline(a.warmup / 60, color="grey", linestyle="--",
                   label="end of warm-up" if ax is axes[0] else None)
    axes[0].legend(loc="lower right")
    axes[1].plot(t, [s["lag_p99_ms"] for s in samples], marker=".", color="tab:red",
                 label="p99 of the window")
    axes[1].plot(t, [s.get("lag_max_ms", 0) for s in samples], marker="x", linestyle="none",
                 color="tab:orange", label="longest in the window (bucket bound)")
    gc_t = [x for x, s in zip(t, samples) if s.get("gc_full")]
    axes[1].plot(gc_t, [max(1, s["gc_full_max_ms"]) for s in samples if s.get("gc_full")],
                 marker="v", linestyle="none", color="black", label="full GC (longest)")
    axes[1].axhline(50, color="grey", linestyle=":", label="50 ms target")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("reactor lag (ms,\nper 10 s window)")
    axes[1].legend(loc="upper right", fontsize="small")
    axes[2].plot(t, [s.get("server_cpu_pct", 0) for s in samples], label="server CPU %")
    axes[2].plot(t, [s.get("server_wait_pct", 0) for s in samples],
                 label="server runnable, waiting for a CPU %")
    axes[2].plot(t, [100 * s.get("load1", 0) for s in samples], label="load average x 100")
    axes[2].set_ylabel("% of one core")
    axes[2].legend(loc="upper right", fontsize="small")
    axes[3].plot(t, [s["delivered_per_s"] for s in samples], marker=".", color="tab:green")
    axes[3].set_ylabel("messages delivered/s")
    axes[3].set_xlabel("minutes")
    fig.suptitle(f"xmppd soak: {a.clients} STARTTLS clients, {a.rooms} rooms x {a.per_room}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_md(result, samples, a, out: Path, png: Path):
    ok = result["pass"]
    lines = [
        "# Soak test (issue 16)",
        "",
        f"Command: `python -m benchmarks.soak {' '.join(sys.argv[1:])}` "
        f"(run under `flock /tmp/bench.lock`), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "Server and load generator share a 2-core machine (load average below).",
        "",
        f"![RSS, reactor lag and deliveries over time]({png.name})",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| clients (STARTTLS, SASL PLAIN, real SCRAM-stored accounts) | {result['clients']} | 5 000 |",
        f"| rooms x occupants | {result['rooms']} x {result['per_room']} | 200 rooms |",
        f"| duration of the mixed load | {result['duration_s']} s | 600 s |",
        f"| logins (all clients) | {result['login_s']} s | |",
        f"| groupchat sent / chat sent / rejoins / reconnects | {result['counts']['groupchat']} / "
        f"{result['counts']['chat']} / {result['counts']['rejoins']} / {result['counts']['reconnects']} | |",
        f"| messages delivered (sequence-checked) | {result['delivered']} "
        f"({result['delivered_per_s']}/s) | |",
        f"| RSS after warm-up -> end (max) | {result['rss_start_mb']} -> {result['rss_end_mb']} MiB "
        f"({result['rss_max_mb']}) | |",
        f"| RSS drift after warm-up (end vs start; linear trend) | {result['rss_drift_pct']} %; "
        f"{result['rss_trend_pct']} % | < 5 % {'PASS' if ok['rss_drift_under_5pct'] else 'FAIL'} |",
        f"| errors (error stanzas, stream errors) | {result['errors']} | 0 "
        f"{'PASS' if ok['zero_errors'] else 'FAIL'} |",
        f"| lost (gaps / missing at end) and duplicated messages | {result['lost_gaps']} / "
        f"{result['lost_final']}, {result['dups']} dup | 0 {'PASS' if ok['zero_lost'] else 'FAIL'} |",
        f"| reactor lag p99 after warm-up ({result['lag_samples_run']} samples) | <= "
        f"{result['lag_p99_ms_run']:g} ms | < 50 ms {'PASS' if ok['lag_p99_under_50ms'] else 'FAIL'} |",
        f"| reactor lag p99.9; worst 10 s window's p99; longest | <= {result['lag_p999_ms_run']:g} ms; "
        f"<= {result['lag_p99_ms_worst_window']:g} ms; <= {result['lag_max_ms']:g} ms | |",
        f"| full GC collections after warm-up (longest) | {result['gc_full_run']} "
        f"(<= {result['gc_full_max_ms_run']:g} ms) | |",
        f"| load average (1 min) after warm-up: mean, max | {result['load1_mean']}, "
        f"{result['load1_max']} | 2 cores |",
        f"| server runnable but waiting for a CPU (mean share) | {result['server_wait_pct_mean']} % | |",
        f"| server CPU over the run | {result['server_cpu_s']} s | |",
        "",
        "Lag is measured inside the server (a timer every 0.5 s, `xmppd_reactor_lag_seconds`);",
        "a quantile is the upper bound of the histogram bucket holding it. GC pauses come from",
        "`xmppd_gc_pause_seconds` (a `gc.callbacks` timer).",
        "",
        "Samples (every %d s):" % a.sample,
        "",
        "| t (s) | RSS (MiB) | lag p99 / max (ms) | full GCs (ms) | CPU % | wait % | load | "
        "sessions | occupants | delivered/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in samples:
        gc_cell = f"{s['gc_full']} ({s['gc_full_max_ms']:g})" if s.get("gc_full") else "0"
        lines.append(f"| {s['t']} | {s['rss_mb']:.1f} | {s['lag_p99_ms']:g} / {s['lag_max_ms']:g} | "
                     f"{gc_cell} | {s['server_cpu_pct']:.0f} | {s['server_wait_pct']:.0f} | "
                     f"{s['load1']:.2f} | {s['sessions']:g} | {s['occupants']:g} | "
                     f"{s['delivered_per_s']:.0f} |")
    if result.get("error_samples"):
        lines += ["", "First error samples:", ""] + [f"    {e[:300]}" for e in result["error_samples"]]
    (out / "SOAK.md").write_text("\n".join(lines) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--rooms", type=int, default=200)
    p.add_argument("--per-room", type=int, default=10)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--warmup", type=float, default=60)
    p.add_argument("--sample", type=float, default=10)
    p.add_argument("--groupchat-rate", type=float, default=40, help="groupchat messages/s")
    p.add_argument("--chat-rate", type=float, default=200, help="1:1 messages/s")
    p.add_argument("--churn-rate", type=float, default=2, help="leave+rejoin per s")
    p.add_argument("--reconnect-rate", type=float, default=2, help="reconnects per s")
    p.add_argument("--concurrency", type=int, default=50, help="logins in flight")
    p.add_argument("--drain", type=float, default=5)
    p.add_argument("--prefill", type=int, default=20,
                   help="groupchat messages per room before the load (the rooms' history length)")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--server", help="HOST:PORT of an xmppd already running with the accounts and "
                   "the soak's settings (benchmarks.memprofile soak); default: start one")
    p.add_argument("--server-pid", type=int, help="with --server: its process id (RSS, CPU)")
    p.add_argument("--metrics-port", type=int, help="with --server: its metrics_port")
    a = p.parse_args(argv)
    if a.server and not (a.server_pid and a.metrics_port):
        p.error("--server needs --server-pid and --metrics-port")
    if a.rooms * a.per_room > a.clients:
        p.error("--rooms x --per-room exceeds --clients")
    return a


def main(argv=None):
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result, samples, work = asyncio.run(run(a))
    result = analyse(result, samples, a)
    (out / "soak.json").write_text(json.dumps({"result": result, "samples": samples}, indent=1))
    png = out / "soak.png"
    plot(samples, png, a)
    write_md(result, samples, a, out, png)
    print(json.dumps(result, indent=1))
    return 0 if all(result["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
