"""Load generator and side-by-side comparison of xmppd with Prosody (issue 6).

``python -m benchmarks.loadgen``  drives one server on 127.0.0.1:PORT and prints JSON figures.
``python -m benchmarks.compare``  starts xmppd and a private Prosody, alternates them over every
scenario, prints the table and writes benchmarks/RESULTS.md.
"""
