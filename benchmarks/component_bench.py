"""Issue 15: what splitting the MUC out and moving storage to PostgreSQL cost.

    flock /tmp/bench.lock python -m benchmarks.component_bench            # full
    flock /tmp/bench.lock python -m benchmarks.component_bench --quick

Part 1, MUC 10 rooms x 50 occupants, groupchat delivered/s (benchmarks.loadgen ``muc``,
the figure of benchmarks/RESULTS.md): xmppd with the MUC built in, then xmppd with
``[[components]]`` for conference.localhost and ``twistd xmppd-muc`` attached over
XEP-0114 (two processes on the same machine). CPU seconds of each process over the
measured window come from /proc.

Part 2, persisted affiliation changes/s: one owner changes affiliations of a persistent
room as fast as the server answers (8 in flight; each answer is sent after the commit),
with ``storage = "sqlite"`` (default synchronous=NORMAL) and ``storage = "postgresql"``
(a private PostgreSQL 15 with its default durability: fsync on, synchronous_commit on; and
again with synchronous_commit=off, the durability class of SQLite's NORMAL).
Reported: changes/s and the IQ round trip p50/p95.

Ratios are printed at the end and written to benchmarks/COMPONENT.md by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from benchmarks import servers  # noqa: E402
from benchmarks.storage_bench import Writer, login, make_persistent_room, wait_id  # noqa: E402
from conftest import XmppdServer  # noqa: E402

SECRET = "bench-secret"
MUC_ADMIN = "http://jabber.org/protocol/muc#admin"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def run_loadgen(port, pid, rooms, per_room, duration):
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "muc", "--port", str(port),
           "--server-pid", str(pid), "--rooms", str(rooms), "--per-room", str(per_room),
           "--tag", "10x50", "--duration", str(duration), "--timeout", "280"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=servers.xmppd_env())
    figs = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("FIGURE ")]
    if out.returncode != 0 or not figs:
        raise RuntimeError(f"loadgen failed: {out.stderr[:1500]}")
    return next(f for f in figs if f["key"].endswith("delivered"))


def muc_builtin(work, rooms, per_room, duration):
    (work / "builtin").mkdir(parents=True, exist_ok=True)
    srv = servers.start_xmppd(work / "builtin", None)
    try:
        c0 = cpu_seconds(srv.pid)
        fig = run_loadgen(srv.port, srv.pid, rooms, per_room, duration)
        fig["xmppd_cpu_s_total"] = round(cpu_seconds(srv.pid) - c0, 2)
        return fig
    finally:
        srv.stop()


def muc_component(work, rooms, per_room, duration):
    d = work / "component"
    d.mkdir(parents=True, exist_ok=True)
    cport = servers.free_port()
    cfg = d / "xmppd.toml"
    cfg.write_text(f'component_port = {cport}\n[[components]]\ndomain = "conference.localhost"\n'
                   f'secret = "{SECRET}"\n')
    srv = servers.start_xmppd(d, None, extra=["--config", str(cfg)])
    muc_log = open(d / "muc.log", "wb")
    muc = subprocess.Popen([sys.executable, "-m", "twisted", "--log-format=text", "xmppd-muc",
                            "--server", f"127.0.0.1:{cport}", "--domain", "conference.localhost",
                            "--secret", SECRET, "--data-dir", str(d / "muc")],
                           cwd=REPO, env=servers.xmppd_env(), stdout=muc_log,
                           stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"component conference.localhost connected" not in (d / "xmppd.log").read_bytes():
            if time.monotonic() > deadline or muc.poll() is not None:
                raise RuntimeError("xmppd-muc did not connect")
            time.sleep(0.1)
        c0, m0 = cpu_seconds(srv.pid), cpu_seconds(muc.pid)
        fig = run_loadgen(srv.port, srv.pid, rooms, per_room, duration)
        fig["xmppd_cpu_s_total"] = round(cpu_seconds(srv.pid) - c0, 2)
        fig["xmppd_muc_cpu_s_total"] = round(cpu_seconds(muc.pid) - m0, 2)
        return fig
    finally:
        muc.terminate()
        muc.wait(15)
        muc_log.close()
        srv.stop()


def pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def affiliation_rate(args, data_dir, members, seconds):
    server = XmppdServer(["--c2s-port", "0", "--data-dir", str(data_dir), "--insecure-auth", *args],
                         Path(data_dir))
    try:
        server.wait_listening()
        admin = login(server.port, "admin")
        room = "busy@conference.localhost"
        make_persistent_room(admin, room, "admin")
        for i in range(members):
            admin.send(f"<iq type='set' to='{room}' id='f{i}'><query xmlns='{MUC_ADMIN}'>"
                       f"<item jid='m{i}@localhost' affiliation='member'/></query></iq>")
        wait_id(admin, f"f{members - 1}")
        w = Writer(admin, room, members, rate=0)
        w.start()
        time.sleep(1.0)
        d0, t0, l0 = w.done, time.perf_counter(), len(w.lat)
        time.sleep(seconds)
        rate = (w.done - d0) / (time.perf_counter() - t0)
        lat = w.lat[l0:]
        w.stop_event.set()
        w.join(10)
        return {"changes_per_s": round(rate), "iq_rtt_p50_ms": pct(lat, 0.5),
                "iq_rtt_p95_ms": pct(lat, 0.95), "samples": len(lat)}
    finally:
        server.stop()


def storage_part(members, seconds):
    from pgserver import PgCluster
    out = {}
    with tempfile.TemporaryDirectory() as d:
        out["sqlite"] = affiliation_rate([], Path(d) / "s", members, seconds)
    cluster = PgCluster(fsync=True)
    try:
        dsn = cluster.new_database()
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "pg.toml"
            cfg.write_text(f'storage = "postgresql"\nstorage_dsn = "{dsn}"\n')
            out["postgresql"] = affiliation_rate(["--config", str(cfg)], Path(d) / "p",
                                                 members, seconds)
        # the same durability class as SQLite's synchronous=NORMAL: a commit survives the
        # xmppd process dying, not a power cut (PostgreSQL may lose its last ~0.6 s then)
        dsn2 = cluster.new_database() + " options='-c synchronous_commit=off'"
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "pg.toml"
            cfg.write_text(f'storage = "postgresql"\nstorage_dsn = "{dsn2}"\n')
            out["postgresql_async_commit"] = affiliation_rate(["--config", str(cfg)], Path(d) / "p",
                                                              members, seconds)
    finally:
        cluster.stop()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--only", choices=["muc", "storage"])
    a = p.parse_args(argv)
    rooms, per_room, duration = (4, 25, 2) if a.quick else (10, 50, 8)
    rounds = a.rounds or (1 if a.quick else 3)
    result = {"muc": {"builtin": [], "component": []}, "storage": []}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for r in range(rounds):
            if a.only in (None, "muc"):
                for kind, fn in (("builtin", muc_builtin), ("component", muc_component)):
                    fig = fn(work / f"r{r}", rooms, per_room, duration)
                    result["muc"][kind].append(fig)
                    print(f"round {r + 1} MUC {rooms}x{per_room} {kind}: {fig['value']:.0f} delivered/s "
                          f"(xmppd CPU {fig.get('xmppd_cpu_s_total')} s, "
                          f"xmppd-muc CPU {fig.get('xmppd_muc_cpu_s_total', '-')} s)", flush=True)
            if a.only in (None, "storage"):
                s = storage_part(10, 3 if a.quick else 8)
                result["storage"].append(s)
                print(f"round {r + 1} persisted affiliation changes: {s}", flush=True)
    summary = {}
    if result["muc"]["builtin"]:
        b = statistics.median(f["value"] for f in result["muc"]["builtin"])
        c = statistics.median(f["value"] for f in result["muc"]["component"])
        summary["muc_builtin_delivered_per_s"] = round(b)
        summary["muc_component_delivered_per_s"] = round(c)
        summary["ratio_component_over_builtin"] = round(c / b, 2)
    if result["storage"]:
        sq = statistics.median(s["sqlite"]["changes_per_s"] for s in result["storage"])
        pg = statistics.median(s["postgresql"]["changes_per_s"] for s in result["storage"])
        summary["sqlite_changes_per_s"] = sq
        summary["postgresql_changes_per_s"] = pg
        summary["ratio_postgresql_over_sqlite"] = round(pg / sq, 2)
        pga = statistics.median(s["postgresql_async_commit"]["changes_per_s"] for s in result["storage"])
        summary["postgresql_async_commit_changes_per_s"] = pga
        summary["ratio_postgresql_async_commit_over_sqlite"] = round(pga / sq, 2)
    print("SUMMARY " + json.dumps(summary), flush=True)
    print("RAW " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
