"""Run every scenario of issue 6 against xmppd and a private Prosody, side by side.

    python -m benchmarks.compare            # full run (~12 min on 2 cores), writes benchmarks/RESULTS.md
    python -m benchmarks.compare --quick    # small N, short windows (~2 min), prints the table only

Each scenario group runs against a freshly started server (pinned to --server-cpu) with the load
generator (benchmarks.loadgen, pinned to --gen-cpu) in a separate process; the servers alternate
group by group and the order flips every round. Ratios are computed per round and the median is
reported, because absolute numbers on a shared machine move by +-30 %.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import servers

REPO = servers.REPO
RESULTS = REPO / "benchmarks" / "RESULTS.md"

# key -> (label, unit, higher_is_better, Prosody figure from the issue, target); a target
# ("x", r) is a ratio to Prosody measured in the same run (issue 9), a number is absolute.
FIGURES = {
    "logins_plain": ("logins/s, real accounts, PLAIN (connect, stream, PLAIN, bind, presence)", "logins/s",
                     True, "~104 (hashed)", ("x", 1.2)),
    "logins_tls": ("logins/s, real accounts, STARTTLS (TLS 1.3) + PLAIN", "logins/s", True, "-", ("x", 1.2)),
    "logins_scram_sha1": ("logins/s, real accounts, SCRAM-SHA-1", "logins/s", True, "~139 (hashed)", ("x", 1.0)),
    "logins_scram_sha256": ("logins/s, real accounts, SCRAM-SHA-256 (Prosody 0.12: not offered; "
                            "target: ejabberd's ~906 from issue 9)", "logins/s", True, "-", 906),
    "logins_scram_sha256_tls": ("logins/s, real accounts, STARTTLS + SCRAM-SHA-256", "logins/s", True, "-", 350),
    "rss_idle": ("server RSS at rest after 20 warm-up logins", "MB", False, "17 MB", 45),
    "mem_idle_conn": ("server memory per idle authenticated connection", "KB", False, "38 KB", 30),
    "mem_occupant": ("server memory per MUC occupant", "KB", False, "7 KB", 7),
    "muc_10x50_delivered": ("MUC 10 rooms x 50, groupchat delivered/s", "msg/s", True, "~8 000", 40000),
    "muc_1x200_delivered": ("MUC 1 room x 200, delivered/s", "msg/s", True, "~8 300", 52000),
    "muc_1x200_p99": ("MUC 1x200 delivery latency p99 at 1 000 deliveries/s offered", "ms", False, "57 ms", 10),
    "chat_delivered": ("1:1 chat delivered/s, 100 pairs, 10 in flight per direction", "msg/s", True, "~10 600",
                       18000),
    "muc_joins": ("MUC joins/s while filling 20 rooms x 100", "joins/s", True, "~46", 300),
    # issue 12 (xmppd only): archiving's cost on groupchat throughput, and one archive page
    "muc_10x50_archiving": ("MUC 10x50 delivered/s, archiving on / off", "ratio", True, "n/a", 0.8),
    "muc_1x200_archiving": ("MUC 1x200 delivered/s, archiving on / off", "ratio", True, "n/a", 0.8),
    "mam_page_p95": ("MAM query p95, one page of 50 from a 100 000-message archive", "ms", False, "n/a", 20),
}
# Groups run against xmppd only: {group: {"config": extra TOML lines, ...}}. The *_log groups
# repeat a MUC group with every room archived (muc_log_by_default = true; off by default);
# the figures muc_*_archiving are the per-round ratio of each to its plain (archiving off) twin.
XMPPD_ONLY = {
    "muc10x50_log": {"config": "muc_log_by_default = true\n"},
    "muc1x200_log": {"config": "muc_log_by_default = true\n"},
    "mam": {},
}
ARCHIVE_MESSAGES = 100_000      # the mam group's archive (user1's), filled before the run
RATIOS = {"muc_10x50_archiving": ("muc_10x50_log_delivered", "muc_10x50_delivered"),
          "muc_1x200_archiving": ("muc_1x200_log_delivered", "muc_1x200_delivered")}


def groups(quick: bool):
    """(name, loadgen argv, timeout s). Quick mode keeps the shapes but shrinks N and durations.

    Each *_log group (archiving on) follows its plain twin, so the on/off ratio compares runs
    close in time.
    """
    if quick:
        return [
            ("login", ["login", "--clients", "300", "--concurrency", "50", "--scram"], 180),
            ("chat", ["chat", "--pairs", "20", "--duration", "2"], 60),
            ("mucfill", ["mucfill", "--rooms", "4", "--per-room", "25"], 120),
            ("muc10x50", ["muc", "--rooms", "4", "--per-room", "25", "--tag", "10x50", "--duration", "2"], 120),
            ("muc10x50_log", ["muc", "--rooms", "4", "--per-room", "25", "--tag", "10x50_log", "--duration", "2"], 120),
            ("muc1x200", ["muc", "--rooms", "1", "--per-room", "50", "--tag", "1x200", "--duration", "2", "--latency-rate", "250"], 120),
            ("muc1x200_log", ["muc", "--rooms", "1", "--per-room", "50", "--tag", "1x200_log", "--duration", "2"], 120),
            ("mam", ["mamquery", "--queries", "100"], 120),
        ]
    return [
        ("login", ["login", "--clients", "2000", "--concurrency", "100", "--scram"], 500),
        ("chat", ["chat", "--pairs", "100", "--window", "10", "--duration", "8"], 120),
        ("mucfill", ["mucfill", "--rooms", "20", "--per-room", "100", "--join-concurrency", "50"], 400),
        ("muc10x50", ["muc", "--rooms", "10", "--per-room", "50", "--tag", "10x50", "--duration", "8"], 240),
        ("muc10x50_log", ["muc", "--rooms", "10", "--per-room", "50", "--tag", "10x50_log", "--duration", "8"], 240),
        ("muc1x200", ["muc", "--rooms", "1", "--per-room", "200", "--tag", "1x200", "--duration", "8", "--latency-rate", "1000"], 240),
        ("muc1x200_log", ["muc", "--rooms", "1", "--per-room", "200", "--tag", "1x200_log", "--duration", "8"], 240),
        ("mam", ["mamquery", "--queries", "300"], 180),
    ]


def accounts_needed(gs) -> int:
    n = 0
    for _, argv, _ in gs:
        def opt(name, default):
            return int(argv[argv.index(name) + 1]) if name in argv else default
        if argv[0] == "login":
            n = max(n, opt("--clients", 2000))
        elif argv[0] == "chat":
            n = max(n, 2 * opt("--pairs", 100))
        elif argv[0] == "mamquery":
            n = max(n, 2)
        else:
            n = max(n, opt("--rooms", 20) * opt("--per-room", 100))
    return n


def run_group(server_name, work: Path, gen_argv, timeout, a, group=None):
    """Start a fresh server, run one loadgen group against it, return its figures (dicts)."""
    if server_name == "xmppd":
        extra = []
        conf = XMPPD_ONLY.get(group, {}).get("config")
        if conf:
            path = work / f"{group}.toml"
            path.write_text(conf)
            extra = ["--config", str(path)]
        log = work / "xmppd" / "xmppd.log"
        log_start = log.stat().st_size if log.exists() else 0
        srv = servers.start_xmppd(work / "xmppd", a.server_cpu, extra)
    else:
        srv = servers.start_prosody(work / "prosody", a.server_cpu)
    cmd = servers.pin(a.gen_cpu) + [sys.executable, "-m", "benchmarks.loadgen", *gen_argv,
                                    "--port", str(srv.port), "--server-pid", str(srv.pid),
                                    "--timeout", str(timeout - 10)]
    figures, err = [], None
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        for line in proc.stdout.splitlines():
            if line.startswith("FIGURE "):
                fig = json.loads(line[7:])
                figures.append(fig)
                if fig.get("errors"):
                    err = f"{fig['key']}: the server answered {fig['errors']} stanzas with type='error'"
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            err = (err + "; " if err else "") + f"loadgen exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        err = f"timed out after {timeout}s"
    finally:
        srv.stop()
    if server_name == "xmppd":
        # A figure measured while the archive dropped messages (its writer fell behind by
        # archive_max_pending rows) flatters the server: say so next to the figure.
        dropped = archive_dropped(log, log_start)
        if dropped:
            for f in figures:
                f["archive_dropped"] = dropped
            err = (err + "; " if err else "") + f"the archive dropped at least {dropped} messages"
    if err:
        print(f"  !! {server_name} {gen_argv[0]}: {err}", file=sys.stderr)
    return figures, err


def archive_dropped(log: Path, start: int) -> int:
    """The largest 'archive: N messages dropped so far' count the server logged since ``start``."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return 0
    counts = [int(m) for m in re.findall(r"archive: (\d+) messages dropped so far", text)]
    return max(counts, default=0)


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("KB", "ms", "MB"):
        return f"{v:,.1f}"
    if unit == "ratio":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(runs, rounds):
    """runs[(server, round)] = {key: figure}; -> rows for the table."""
    rows = []
    for key, (label, unit, higher, prosody_issue, target) in FIGURES.items():
        xs = [runs.get(("xmppd", r), {}).get(key) for r in range(rounds)]
        ps = [runs.get(("prosody", r), {}).get(key) for r in range(rounds)]
        xv = median([f["value"] for f in xs if f])
        pv = median([f["value"] for f in ps if f])
        ratios = [x["value"] / p["value"] for x, p in zip(xs, ps) if x and p and p["value"]]
        ratio = median(ratios)
        # Work per server CPU-second: insensitive to how much of its core the server got on a
        # shared machine (meaningful for throughput figures, where the server is the bottleneck).
        eff = None
        if higher:
            effs = [(x["value"] / x["server_cpu"]) / (p["value"] / p["server_cpu"]) for x, p in zip(xs, ps)
                    if x and p and x.get("server_cpu") and p.get("server_cpu") and p["value"]]
            eff = median(effs)
        cpu = lambda fs, k: median([f.get(k) for f in fs if f])  # noqa: E731
        met = None
        if isinstance(target, tuple):
            if ratio is not None:
                met = ratio >= target[1] if higher else ratio <= target[1]
        elif xv is not None:
            met = xv >= target if higher else xv <= target
        beats = None
        if ratio is not None:
            beats = ratio >= 1 if higher else ratio <= 1
        rows.append(dict(key=key, label=label, unit=unit, higher=higher, xmppd=xv, prosody=pv, ratio=ratio, eff=eff,
                         target=target, met=met, beats=beats, prosody_issue=prosody_issue,
                         x_server_cpu=cpu(xs, "server_cpu"), x_gen_cpu=cpu(xs, "gen_cpu"),
                         p_server_cpu=cpu(ps, "server_cpu"), p_gen_cpu=cpu(ps, "gen_cpu"),
                         x_server_wait=cpu(xs, "server_wait"), p_server_wait=cpu(ps, "server_wait"),
                         x_gen_wait=cpu(xs, "gen_wait"), p_gen_wait=cpu(ps, "gen_wait"),
                         x_all=[f["value"] if f else None for f in xs], p_all=[f["value"] if f else None for f in ps]))
    return rows


def table(rows) -> str:
    out = ["| figure | Prosody (issue) | Prosody | xmppd | xmppd / Prosody | same, per server CPU-second | target | target met | "
           "server CPU % [waited %] (xmppd / Prosody) | generator CPU % [waited %] (xmppd run / Prosody run) |",
           "|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|"]
    for r in rows:
        arrow = "higher is better" if r["higher"] else "lower is better"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
        sc = (f"{fmt(r['x_server_cpu'], 'x')} [{fmt(r['x_server_wait'], 'x')}] / "
              f"{fmt(r['p_server_cpu'], 'x')} [{fmt(r['p_server_wait'], 'x')}]")
        gc = (f"{fmt(r['x_gen_cpu'], 'x')} [{fmt(r['x_gen_wait'], 'x')}] / "
              f"{fmt(r['p_gen_cpu'], 'x')} [{fmt(r['p_gen_wait'], 'x')}]")
        if r["key"].startswith(("mem_", "rss_")):
            sc = gc = "-"
        eff = "-" if r["eff"] is None else f"{r['eff']:.2f}"
        t = r["target"]
        tgt = ("≥ " if r["higher"] else "≤ ") + (f"{t[1]}× Prosody" if isinstance(t, tuple) else f"{t:,}")
        out.append(f"| {r['label']} ({r['unit']}, {arrow}) | {r['prosody_issue']} | {fmt(r['prosody'], r['unit'])} | "
                   f"{fmt(r['xmppd'], r['unit'])} | {ratio} | {eff} | {tgt} | {met} | {sc} | {gc} |")
    return "\n".join(out)


def verdict(rows) -> str:
    have = [r for r in rows if r["ratio"] is not None]
    beats = [r["key"] for r in have if r["beats"]]
    met = [r["key"] for r in rows if r["met"]]
    missed = [r["key"] for r in rows if r["met"] is False]
    return (f"xmppd is better than Prosody in {len(beats)} of {len(have)} compared figures"
            + (f" (not in: {', '.join(r['key'] for r in have if not r['beats'])})" if len(beats) < len(have) else "")
            + f"; it meets the issue's target in {len(met)} of {len(rows)}"
            + (f" (missed: {', '.join(missed)}; see benchmarks/PROFILE.md for why)" if missed else "") + ".")


def headroom(rows) -> str:
    """One sentence on the generator's share of its core, from the figures themselves."""
    busy = [(r[f"{s}_gen_cpu"], r[f"{s}_gen_wait"] or 0, r["key"], s) for r in rows for s in ("x", "p")
            if r[f"{s}_gen_cpu"] is not None and not r["key"].startswith(("mem_", "rss_"))]
    if not busy:
        return ""
    cpu, wait, key, _ = max(busy)
    return (f"the generator used at most {cpu:.0f} % of its core (in {key}), so it had headroom "
            "left in every figure; where its own [waited %] is high, other jobs took its core and "
            "the figure is a lower bound for both servers.")


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        import twisted
        tw = twisted.__version__
    except Exception:
        tw = "?"
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio (uvloop not installed)"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "xmppd", "twisted"],
                           cwd=REPO, capture_output=True, text=True).stdout.split("\n")
    dirty = [d for d in dirty if d.strip()]
    if dirty:
        commit += f" plus uncommitted changes in {len(dirty)} server file(s) of the working tree"
    load = os.getloadavg()
    return (f"- CPU: {os.cpu_count()} × {cpu}; memory {mem}; {platform.platform()}\n"
            f"- Python {platform.python_version()}, Twisted {tw}; Prosody {servers.prosody_version()} "
            f"(Lua, epoll backend); generator event loop: {loop}\n"
            f"- xmppd commit {commit}; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            "(the machine is shared: expect ±30 %)")


def write_results(path: Path, rows, runs, a, started, elapsed, errors, cmdline):
    lines = [
        "# xmppd vs Prosody: benchmark results",
        "",
        f"Generated by `{cmdline}` on {started:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min "
        f"({a.rounds} round(s), servers alternating, fresh server per scenario group). "
        "Regenerate with the same command; see benchmarks/README.md for the method and "
        "benchmarks/PROFILE.md for what limits xmppd.",
        "",
        "## Machine",
        "",
        machine(),
        f"- server pinned to CPU {a.server_cpu}, load generator to CPU {a.gen_cpu} (`taskset`)",
        "",
        "## Commands",
        "",
        f"- xmppd: `{servers.XMPPD_COMMAND}` (accounts user1..userN created beforehand with SCRAM "
        "keys, 10 000 iterations; every login checks the stored credentials)",
        f"- Prosody: `{servers.PROSODY_COMMAND}`; limits disabled, accounts user1..userN stored "
        "hashed (SCRAM-SHA-1 keys, 10 000 iterations)",
        "- generator: `python -m benchmarks.loadgen GROUP --port P --server-pid PID ...`, arguments per group:",
        "",
    ]
    for name, argv, _ in a.groups:
        lines.append(f"  - {name}: `{' '.join(argv)}`")
    lines += [
        "",
        "## Results",
        "",
        "Values are medians over the rounds; the ratio is the median of per-round ratios; "
        "'Prosody (issue)' is the figure quoted in issue 6 (measured elsewhere). "
        f"CPU columns are % of one core over the measured window; {headroom(rows)} "
        "'Per server CPU-second' divides each rate by the server's CPU share before taking the "
        "ratio: it compares the work each server does per second of its own CPU, which other jobs "
        "on a shared machine do not distort (for logins and echo-paced MUC traffic the client's "
        "round trips also count, so the plain ratio is the one that matters there). "
        "[waited %] is the share of the window the "
        "server was runnable but its core ran something else (/proc/PID/schedstat): other "
        "developers' jobs on this shared machine; a server at 60 % CPU + 40 % waited was saturated.",
        "",
        table(rows),
        "",
        verdict(rows),
        "",
        "Per-round values (xmppd | Prosody):",
        "",
    ]
    for r in rows:
        lines.append(f"- {r['key']}: {r['x_all']} | {r['p_all']}")
    lines += ["", "Details per run (counts behind each figure):", ""]
    for (sname, rnd), figs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for key, f in figs.items():
            extra = {k: v for k, v in f.items() if k not in ("key", "value", "unit")}
            lines.append(f"- round {rnd + 1} {sname} {key} = {f['value']} {f['unit']}: "
                         + ", ".join(f"{k} {v}" for k, v in extra.items()))
    if errors:
        lines += ["", "Errors during the run:", ""] + [f"- {e}" for e in errors]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small N and short windows (a smoke run)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3, quick 1)")
    p.add_argument("--servers", default="xmppd,prosody")
    p.add_argument("--only", help="comma-separated groups (login,chat,mucfill,muc10x50,muc10x50_log,muc1x200,muc1x200_log,mam)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--gen-cpu", type=int, default=1)
    p.add_argument("--work-dir", type=Path, help="keep server data here (default: a temporary directory)")
    p.add_argument("--output", type=Path, help=f"results file (default {RESULTS.relative_to(REPO)} for a full "
                   "run, none for --quick)")
    a = p.parse_args(argv)
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if os.cpu_count() and max(a.server_cpu, a.gen_cpu) >= os.cpu_count():
        a.server_cpu = a.gen_cpu = None
    gs = groups(a.quick)
    if a.only:
        wanted = set(a.only.split(","))
        gs = [g for g in gs if g[0] in wanted]
    a.groups = gs
    names = a.servers.split(",")
    own = a.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="xmppd-bench-")) if own else a.work_dir
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    n = accounts_needed(gs)
    if "xmppd" in names:
        servers.prepare_xmppd(work / "xmppd", n)
        if any(g[0] == "mam" for g in gs):
            servers.prepare_archive(work / "xmppd", "user1@localhost", ARCHIVE_MESSAGES)
    if "prosody" in names:
        servers.prepare_prosody(work / "prosody", n)
    runs, errors = {}, []
    try:
        for rnd in range(a.rounds):
            for gi, (gname, gargv, timeout) in enumerate(gs):
                order = names if (rnd + gi) % 2 == 0 else names[::-1]
                for sname in order:
                    if gname in XMPPD_ONLY and sname != "xmppd":
                        continue
                    print(f"[round {rnd + 1}/{a.rounds}] {gname} on {sname}", file=sys.stderr, flush=True)
                    figs, err = run_group(sname, work, gargv, timeout, a, gname)
                    if err:
                        errors.append(f"round {rnd + 1} {gname} on {sname}: {err}")
                    for f in figs:
                        runs.setdefault((sname, rnd), {})[f["key"]] = f
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t0
    for (sname, rnd), figs in runs.items():
        for key, (on, off) in RATIOS.items():
            if on in figs and off in figs and figs[off]["value"]:
                figs[key] = {"key": key, "value": figs[on]["value"] / figs[off]["value"], "unit": "ratio",
                             "on": figs[on]["value"], "off": figs[off]["value"]}
    rows = summarise(runs, a.rounds)
    print()
    print(table(rows))
    print()
    print(verdict(rows))
    print(f"\n{elapsed / 60:.1f} min; {len(errors)} error(s)")
    if a.quick:
        print("(quick run: smaller N and shorter windows than the issue's scenarios; targets do not apply)")
    out = a.output or (None if a.quick else RESULTS)
    if out:
        cmdline = "python -m benchmarks.compare" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                    if (argv if argv is not None else sys.argv[1:]) else "")
        write_results(out, rows, runs, a, started, elapsed, errors, cmdline.strip())
        print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
