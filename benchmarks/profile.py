"""Profile xmppd under one load-generator group with py-spy, and print where the time goes.

    python -m benchmarks.profile login -- --clients 2000 --concurrency 100 --no-tls
    python -m benchmarks.profile muc -- --rooms 10 --per-room 50 --duration 8

Starts a fresh xmppd pinned to CPU 0 (accounts pre-created), attaches ``py-spy record
--format raw`` (``pip install py-spy``) for the whole group, and prints the functions with
the most samples, by own time and by inclusive time, plus the collapsed stacks file path
(feed it to flamegraph.pl or speedscope for a picture). Samples are taken only while the
server is on CPU (py-spy skips idle threads), so the shares add up to the server's busy time.
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import servers


# Buckets for a one-line answer to "where does the time go": a sample goes to the first bucket
# one of whose markers appears anywhere in its stack (so order = priority).
BUCKETS = [
    ("logging (twisted.logger per event)", ("Logger.info", "Logger.emit", "Logger.failure", "log.msg")),
    ("TLS (pyOpenSSL handshake, encrypt)", ("OpenSSL", "TLSMemoryBIO", "_sslverify")),
    ("stringprep / JID parsing", ("stringprep", "xmppd/jid.py", "JID.__init__")),
    ("SQLite (account lookup)", ("Database.", "sqlite")),
    ("new XML parser per stream", ("elementStream", "ExpatElementStream.__init__", "new_stream")),
    ("socket writes (doWrite, send)", ("doWrite", "writeSomeData")),
    ("epoll register/unregister (start/stopWriting)", ("startWriting", "stopWriting", "addWriter",
                                                       "removeWriter")),
    ("serialisation (toXml, serialize.py)", ("toXml", "serialize.py")),
    ("MUC room logic", ("room.py", "muc/")),
    ("routing (router.py, session deliver)", ("router.py", "Session.deliver", "Session.write_stanza")),
    ("XML parse (expat callbacks, Element building)", ("ExpatElementStream.parse",)),
    ("accept/connect/close", ("doAccept", "connectionLost", "connectionMade", "socket.accept")),
    ("reactor loop, timers, dispatch", ("doPoll", "mainLoop", "runUntilCurrent", "callLater")),
]


def buckets(raw: Path) -> str:
    counts, total = collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        for name, markers in BUCKETS:
            if any(m in stack for m in markers):
                counts[name] += n
                break
        else:
            counts["other"] += n
    return "\n".join(f"  {100 * n / max(1, total):5.1f}%  {name}" for name, n in counts.most_common())


def summarise(raw: Path, top: int) -> str:
    own, incl, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 2)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"{total} samples (at the sampling rate, seconds = samples / rate)", "\nbuckets:", buckets(raw)]
    out.append("\nown time:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("\ninclusive time:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group")
    p.add_argument("--accounts", type=int, default=2000)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--window", type=int, default=0,
                   help="profile only the Nth measured window of the group (0 = the first); "
                        "-1 = the whole run including logins and room fills")
    p.add_argument("--nonblocking", action="store_true",
                   help="do not pause the server to sample (use for latency runs)")
    p.add_argument("--out", type=Path, help="collapsed stacks file (default: in the temp dir)")
    a, a.loadgen_args = p.parse_known_args(argv)
    a.loadgen_args = [x for x in a.loadgen_args if x != "--"]
    if not shutil.which("py-spy"):
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    work = Path(tempfile.mkdtemp(prefix="xmppd-prof-"))
    servers.prepare_xmppd(work / "xmppd", a.accounts)
    srv = servers.start_xmppd(work / "xmppd", 0)
    raw = a.out or work / "stacks.txt"
    spy_cmd = ["py-spy", "record", "--pid", str(srv.pid), "--format", "raw", "--rate", str(a.rate),
               "--output", str(raw)] + (["--nonblocking"] if a.nonblocking else [])
    spy = None

    def start_spy():
        return subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_spy(spy):
        if spy is not None and spy.poll() is None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(30)

    try:
        if a.window < 0:
            spy = start_spy()
            time.sleep(1.0)
        gen = subprocess.Popen(servers.pin(1) + [sys.executable, "-m", "benchmarks.loadgen", a.group,
                                                 *a.loadgen_args, "--port", str(srv.port),
                                                 "--server-pid", str(srv.pid)],
                               cwd=servers.REPO, stdout=subprocess.PIPE, text=True)
        windows = 0
        for line in gen.stdout:
            if line.startswith("PHASE") and a.window >= 0:
                if windows == a.window:
                    spy = start_spy()
                windows += 1
            elif line.startswith("FIGURE"):
                print(line.rstrip())
                if a.window >= 0 and windows == a.window + 1:
                    stop_spy(spy)
        gen.wait(600)
    finally:
        stop_spy(spy)
        srv.stop()
    print(summarise(raw, a.top))
    print(f"\ncollapsed stacks: {raw}")


if __name__ == "__main__":
    main()
