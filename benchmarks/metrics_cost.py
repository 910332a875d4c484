"""What the hot-path metrics cost per event, in-process (no server, no network noise).

    python -m benchmarks.metrics_cost

Times the exact statements the transports and sessions run per read, per
stanza in and per stanza out (xmppd.metrics.STATS), against an empty loop
of the same shape, with timeit's best of several repeats. Compare the
nanoseconds with what the server spends per stanza (tens of microseconds,
benchmarks/PROFILE.md).
"""
import timeit

SETUP = "from xmppd.metrics import STATS; data = b'x' * 200; name = 'message'"
CASES = {
    "read (bytes in)": "STATS.bytes_in += len(data)",
    "stanza in (by kind)": "STATS.stanzas_in[name] += 1",
    "stanza out (count + bytes)": "stats = STATS; stats.stanzas_out += 1; stats.bytes_out += len(data)",
    "MUC message": "STATS.muc_messages += 1",
}


def main():
    n = 1_000_000
    empty = min(timeit.repeat("pass", SETUP, number=n, repeat=7)) / n
    print(f"{'event':30} {'ns per event':>14}")
    for label, stmt in CASES.items():
        t = min(timeit.repeat(stmt, SETUP, number=n, repeat=7)) / n
        print(f"{label:30} {max(0.0, t - empty) * 1e9:14.1f}")


if __name__ == "__main__":
    main()
