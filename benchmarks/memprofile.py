"""Where xmppd's memory per connection / per occupant goes, by allocation site (tracemalloc).

    python -m benchmarks.memprofile login   -- --clients 1000 --no-tls
    python -m benchmarks.memprofile mucfill -- --rooms 10 --per-room 100
    python -m benchmarks.memprofile soak --accounts 2000 -- --clients 2000 --duration 300

``soak`` runs ``benchmarks.soak`` against the in-process server and compares the snapshot
taken at the end of the soak's warm-up with the one at the end of its load: what grew while
the load was steady (a leak, or a bounded store still filling), in KiB per allocation site.

Runs xmppd in this process (``xmppd.server.build``, the same wiring twistd uses) with
tracemalloc on, drives it with ``benchmarks.loadgen`` in a subprocess, and when the generator
reports a memory figure compares a snapshot with the one taken before the logins (idle
connections) or before the room fill (occupants). Prints the top allocation sites in bytes per
connection / occupant. tracemalloc sees Python allocations only (not expat's or OpenSSL's C
buffers): compare its total with the RSS figure.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path

from benchmarks import servers


def report(label, before, after, n, top):
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    if n is None:
        print(f"\n{label}: tracemalloc {total / 1024:+,.0f} KiB; top sites:")
    else:
        print(f"\n{label}: tracemalloc +{total / 1024:,.0f} KiB for {n} = {total / n:,.0f} B each; top sites:")
    for s in stats[:top]:
        frame = s.traceback[0]
        fn = frame.filename
        for marker in ("site-packages/", "/work/main/", "lib/python3"):
            if marker in fn:
                fn = fn.split(marker, 1)[1]
        if n is None:
            print(f"  {s.size_diff / 1024:+10,.0f} KiB  {s.count_diff:+9,d} blocks  {fn}:{frame.lineno}")
        else:
            print(f"  {s.size_diff / n:8,.0f} B  {s.count_diff / n:6.2f} blocks  {fn}:{frame.lineno}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group", choices=("login", "mucfill", "soak"))
    p.add_argument("--accounts", type=int, default=2000)
    p.add_argument("--top", type=int, default=25)
    a, rest = p.parse_known_args(argv)
    rest = [x for x in rest if x != "--"]

    work = Path(tempfile.mkdtemp(prefix="xmppd-mem-"))
    servers.prepare_xmppd(work / "xmppd", a.accounts)
    port = servers.free_port()

    tracemalloc.start(1)
    import xmppd  # noqa: F401  (compat shim before wokkel)
    from twisted.internet import reactor, threads
    from xmppd import config, server
    settings = {"data_dir": str(work / "xmppd"), "c2s_port": port, "http_port": 0,
                "insecure_auth": True, "require_encryption": "false"}
    if a.group == "soak":    # the soak's own server settings (benchmarks/soak.py)
        mport = servers.free_port()
        settings.update(insecure_auth=False, metrics_port=mport, max_offline_messages=1000,
                        muc_max_rooms_per_creator=0)
    cfg = config.load(None, settings)
    root = server.build(cfg)
    root.startService()
    snaps = {}

    def snap(name):
        import gc
        gc.collect()
        snaps[name] = tracemalloc.take_snapshot()

    def drive_soak():
        import tempfile as tf
        cmd = [sys.executable, "-m", "benchmarks.soak", *rest, "--server", f"127.0.0.1:{port}",
               "--server-pid", str(os.getpid()), "--metrics-port", str(mport),
               "--out", tf.mkdtemp(prefix="xmppd-memsoak-")]
        gen = subprocess.Popen(cmd, cwd=servers.REPO, stdout=subprocess.PIPE, text=True)
        for line in gen.stdout:
            if line.startswith("PHASE warm"):
                threads.blockingCallFromThread(reactor, snap, "warm")
            elif line.startswith("PHASE end"):
                threads.blockingCallFromThread(reactor, snap, "end")
                report("growth from the end of the warm-up to the end of the load",
                       snaps["warm"], snaps["end"], None, a.top)
            elif line.startswith("soak: {"):
                print(line.rstrip()[:160], flush=True)
        gen.wait(120)
        reactor.callFromThread(reactor.stop)

    def drive():
        cmd = servers.pin(1) + [sys.executable, "-m", "benchmarks.loadgen", a.group, *rest, "--port", str(port),
                                "--server-pid", str(os.getpid()), "--hold", "20", "--timeout", "600"]
        threads.blockingCallFromThread(reactor, snap, "start")
        gen = subprocess.Popen(cmd, cwd=servers.REPO, stdout=subprocess.PIPE, text=True)
        for line in gen.stdout:
            if line.startswith("PHASE"):
                threads.blockingCallFromThread(reactor, snap, "phase")
            elif line.startswith("FIGURE"):
                print(line.rstrip(), flush=True)
                if '"mem_idle_conn"' in line or '"mem_occupant"' in line:
                    import json
                    fig = json.loads(line[7:])
                    threads.blockingCallFromThread(reactor, snap, "mem")
                    if fig["key"] == "mem_idle_conn":
                        report("per idle connection", snaps["start"], snaps["mem"], fig["clients"], a.top)
                    else:
                        report("per occupant", snaps["phase"], snaps["mem"], fig["occupants"], a.top)
                    gen.terminate()
                    break
        gen.wait(60)
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=drive_soak if a.group == "soak" else drive, daemon=True).start()
    reactor.run()


if __name__ == "__main__":
    main()
