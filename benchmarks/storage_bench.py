"""Cost of durable storage (issue 4): a persisted affiliation change, and whether room
messages slow down while the database is being written.

    python -m benchmarks.storage_bench                 # both parts, synchronous=NORMAL and FULL
    python -m benchmarks.storage_bench --quick

Part 1, in process: ``RoomStore.save_room`` (what the MUC calls on every affiliation
change of a persistent room; it rewrites the room's affiliation rows in one transaction)
for rooms with 10, 100 and 1000 affiliations; median and p95 ms of many.

Part 2, over sockets against a server subprocess (``--insecure-auth``): an occupant of a
persistent room sends a groupchat message and waits for its reflection; median/p95 RTT of
many (one probe every 5 ms), first on an idle server, then while another client changes affiliations in a second
room, as fast as the server answers (8 in flight) and at a steady 200/s. The busy room is
persistent (each change is a committed write) or temporary (same MUC work, no write), so
the difference between the two is what the database costs the reactor (the commit itself
runs on the storage writer thread; the reactor builds the row snapshot and, when the
commit's Deferred fires, sends the result).
The server is run with ``XMPPD_SQLITE_SYNCHRONOUS`` = NORMAL (the default: durable across
process crashes) and FULL (also across power loss: one fsync per commit).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from conftest import XmppdServer  # noqa: E402
from test_c2s_raw import C, Raw  # noqa: E402

MUC = "http://jabber.org/protocol/muc"
MUC_ADMIN = MUC + "#admin"
MUC_OWNER = MUC + "#owner"
PROBE_INTERVAL = 0.005   # one groupchat RTT probe every 5 ms


def stats(ms):
    ms = sorted(ms)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3),
            "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 3), "max_ms": round(ms[-1], 3)}


# -- part 1 -----------------------------------------------------------------------------

def bench_save_room(synchronous, sizes, repeat):
    import xmppd  # noqa: F401
    from xmppd.config import Config
    from xmppd.storage.db import Database
    from xmppd.storage.rooms import RoomStore
    out = {}
    with tempfile.TemporaryDirectory() as d:
        db = Database(os.path.join(d, "x.sqlite3"), synchronous=synchronous)
        rooms = RoomStore(db, Config(data_dir=d))
        for n in sizes:
            jid = f"r{n}@conference.localhost"
            config = {"persistent": True, "members_only": True, "name": "Bench"}
            affs = {f"u{i}@localhost": "member" for i in range(n)}
            data = {f"u{i}@localhost": {"nick": f"U{i}"} for i in range(0, n, 3)}
            times = []
            for k in range(repeat):
                affs[f"u{k % n}@localhost"] = "outcast" if k % 2 else "member"
                t = time.perf_counter()
                rooms.save_room(jid, config, affs, data)
                times.append((time.perf_counter() - t) * 1000)
            out[n] = stats(times)
        db.close()
    return out


# -- part 2 -----------------------------------------------------------------------------

def login(port, user):
    c = Raw(port, timeout=10)
    c.login(user, "pw", resource="b")
    return c


def wait_id(c, iq_id):
    while True:
        el = c.next()
        if el.get("id") == iq_id:
            return el


def make_persistent_room(c, room, nick):
    c.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>")
    c.send(f"<iq type='set' to='{room}' id='cfg'><query xmlns='{MUC_OWNER}'>"
           f"<x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE'><value>{MUC}#roomconfig</value></field>"
           f"<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
           f"</x></query></iq>")
    el = wait_id(c, "cfg")
    assert el.get("type") == "result", el


def rtt_samples(c, room, count, interval=0.0):
    """``count`` groupchat round trips, one every ``interval`` s (0: back to back)."""
    times = []
    tick = time.perf_counter()
    for i in range(count):
        if interval:
            tick += interval
            delay = tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        mid = f"rtt{i}-{time.monotonic_ns()}"
        t = time.perf_counter()
        c.send(f"<message to='{room}' type='groupchat' id='{mid}'><body>ping {i}</body></message>")
        while True:
            el = c.next()
            if el.tag == f"{C}message" and el.get("id") == mid:
                break
        times.append((time.perf_counter() - t) * 1000)
    return times


class Writer(threading.Thread):
    """Affiliation changes in the busy room: ``rate`` per second (0 = as fast as answered, 8 in flight)."""

    def __init__(self, c, room, members, rate=0, window=8):
        super().__init__(daemon=True)
        self.c, self.room, self.members, self.rate, self.window = c, room, members, rate, window
        self.stop_event = threading.Event()
        self.done = 0
        self.lat = []

    def run(self):
        sent = {}
        i = 0
        next_send = time.perf_counter()
        while not self.stop_event.is_set() or sent:
            now = time.perf_counter()
            may_send = len(sent) < self.window and not self.stop_event.is_set() and \
                (self.rate == 0 or now >= next_send)
            if may_send:
                aff = "member" if (i // self.members) % 2 == 0 else "none"
                iq_id = f"w{i}"
                self.c.send(f"<iq type='set' to='{self.room}' id='{iq_id}'><query xmlns='{MUC_ADMIN}'>"
                            f"<item jid='m{i % self.members}@localhost' affiliation='{aff}'/></query></iq>")
                sent[iq_id] = time.perf_counter()
                i += 1
                next_send += 1 / self.rate if self.rate else 0
                if self.rate == 0 or len(sent) < self.window:
                    continue
            try:
                wait = max(0.001, next_send - time.perf_counter()) if self.rate else None
                el = self.c.next(wait)
            except AssertionError:
                continue   # nothing within the pacing interval
            t0 = sent.pop(el.get("id"), None) if el.tag == f"{C}iq" else None
            if t0 is not None:
                assert el.get("type") == "result", el
                self.done += 1
                self.lat.append((time.perf_counter() - t0) * 1000)


def bench_server(synchronous, members, samples, rates=(0, 200)):
    """RTT idle, then with a writer per rate, in a persistent and in a temporary busy room."""
    os.environ["XMPPD_SQLITE_SYNCHRONOUS"] = synchronous
    results = {}
    with tempfile.TemporaryDirectory() as d:
        server = XmppdServer(["--c2s-port", "0", "--data-dir", d, "--insecure-auth"], Path(d))
        try:
            server.wait_listening()
            talker = login(server.port, "talker")
            make_persistent_room(talker, "chat@conference.localhost", "talker")
            admin = login(server.port, "admin")
            busy_rooms = {"persistent": "busy@conference.localhost",
                          "temporary": "temp@conference.localhost"}
            make_persistent_room(admin, busy_rooms["persistent"], "admin")
            admin.send(f"<presence to='{busy_rooms['temporary']}/admin'><x xmlns='{MUC}'/></presence>")
            admin.send(f"<iq type='set' to='{busy_rooms['temporary']}' id='tcfg'><query xmlns='{MUC_OWNER}'>"
                       f"<x xmlns='jabber:x:data' type='submit'/></query></iq>")
            wait_id(admin, "tcfg")
            for kind, room in busy_rooms.items():   # each busy room holds `members` affiliations
                for i in range(members):
                    admin.send(f"<iq type='set' to='{room}' id='f{kind}{i}'>"
                               f"<query xmlns='{MUC_ADMIN}'><item jid='m{i}@localhost' "
                               f"affiliation='member'/></query></iq>")
                wait_id(admin, f"f{kind}{members - 1}")
            rtt_samples(talker, "chat@conference.localhost", 50)   # warm-up
            results["idle"] = {"rtt": stats(rtt_samples(talker, "chat@conference.localhost",
                                                        samples, PROBE_INTERVAL))}
            for rate in rates:
                for kind, room in busy_rooms.items():
                    writer = Writer(admin, room, members, rate=rate)
                    writer.start()
                    time.sleep(0.3)
                    start_done, t0 = writer.done, time.perf_counter()
                    busy = rtt_samples(talker, "chat@conference.localhost", samples, PROBE_INTERVAL)
                    got = (writer.done - start_done) / (time.perf_counter() - t0)
                    writer.stop_event.set()
                    writer.join(10)
                    label = f"{kind} room, {'max' if rate == 0 else rate} changes/s"
                    results[label] = {"rtt": stats(busy), "changes_per_s": round(got),
                                      "change_iq_rtt": stats(writer.lat)}
            return results
        finally:
            server.stop()
            os.environ.pop("XMPPD_SQLITE_SYNCHRONOUS", None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sync", default="NORMAL,FULL")
    p.add_argument("--members", default="10,100",
                   help="affiliations per busy room, comma-separated (e.g. 1000: ~6 ms commits)")
    args = p.parse_args(argv)
    repeat = 100 if args.quick else 500
    samples = 300 if args.quick else 1000   # x 5 ms = the measuring window per condition
    for sync in args.sync.split(","):
        print(f"== synchronous={sync}")
        for n, s in bench_save_room(sync, (10, 100, 1000), repeat).items():
            print(f"save_room, {n:5d} affiliations: {s}")
        for members in (int(m) for m in args.members.split(",")):
            print(f"server, busy rooms with {members} affiliations each (groupchat RTT in ms):")
            for label, r in bench_server(sync, members, samples).items():
                print(f"  {label}: {r}")

if __name__ == "__main__":
    main()
