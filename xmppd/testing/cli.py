"""``xmppd-scansion``: run scansion scripts against an XMPP server on host:port.

Exit code 0 only when every script passes; each failure names the script and line and shows the
expected stanza next to the stanzas actually received.
"""
from __future__ import annotations

import argparse
import sys

from xmppd.testing.runner import DEFAULT_NOTHING_WAIT, DEFAULT_TIMEOUT, run_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xmppd-scansion",
        description="Run scansion (.scs) scripts against an XMPP server.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="scansion scripts to run, in order")
    p.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    p.add_argument("--port", type=int, default=5222, help="c2s port (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds a 'receives' step waits for a match (default: %(default)s)")
    p.add_argument("--nothing-wait", type=float, default=DEFAULT_NOTHING_WAIT,
                   help="seconds 'receives: nothing' listens (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every step and all XML traffic")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    failed = 0
    for path in args.files:
        result = run_file(path, args.host, args.port, args.timeout, args.nothing_wait, log)
        if result.ok:
            print(f"PASS {path} ({result.steps_run} steps, {result.duration:.2f}s)", flush=True)
        else:
            failed += 1
            assert result.failure is not None
            print(result.failure.report(), flush=True)
    total = len(args.files)
    print(f"{total - failed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
