"""PEP throughput on a real server: pipelined publishes and item reads from one client.

    python -m benchmarks.pep_bench [--n 2000] [--size 200]

Starts a fresh xmppd (``--insecure-auth``, its own data dir), logs one client in over
plain TCP on loopback, then sends ``n`` publishes to one node (max_items 1, so each
publish also drops the previous item) without waiting, and counts the result IQs;
then ``n`` items gets the same way. Every publish is one commit on the writer thread,
so the figure includes SQLite's commit (synchronous=NORMAL). Prints one line per
figure. Not a test: a measurement to compare before/after a change.
"""
import argparse
import base64
import socket
import tempfile
import time
from pathlib import Path

from benchmarks.servers import start_xmppd


def login(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)

    def expect(marker):
        buf = b""
        while marker not in buf:
            data = s.recv(65536)
            if not data:
                raise RuntimeError(f"closed while waiting for {marker!r}: {buf!r}")
            buf += data
        return buf

    head = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
    s.sendall(head)
    expect(b"</stream:features>")
    token = base64.b64encode(b"\0bench\0pw").decode()
    s.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode())
    expect(b"<success")
    s.sendall(head)
    expect(b"</stream:features>")
    s.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    expect(b"</iq>")
    return s


def pipelined(s, stanzas, marker):
    """Send all stanzas at once; wait until ``marker`` was seen once per stanza; return seconds."""
    t0 = time.monotonic()
    s.sendall("".join(stanzas).encode())
    seen = 0
    tail = b""
    while seen < len(stanzas):
        data = s.recv(1 << 20)
        if not data:
            raise RuntimeError("connection closed")
        chunk = tail + data
        seen += chunk.count(marker)
        tail = chunk[-(len(marker) - 1):]
    return time.monotonic() - t0


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=200, help="payload text bytes")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xmppd-pep-bench-") as d:
        server = start_xmppd(Path(d), None, extra=("--insecure-auth",))
        try:
            s = login(server.port)
            text = "x" * a.size
            pubs = [f"<iq type='set' id='p{i}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                    f"<publish node='urn:bench'><item id='i{i}'><t xmlns='urn:bench'>{text}</t></item>"
                    f"</publish></pubsub></iq>" for i in range(a.n)]
            took = pipelined(s, pubs, b"type='result'")
            print(f"pep publish: {a.n / took:.0f}/s ({a.n} pipelined, {a.size}-byte payload)")
            gets = [f"<iq type='get' id='g{i}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                    f"<items node='urn:bench'/></pubsub></iq>" for i in range(a.n)]
            took = pipelined(s, gets, b"type='result'")
            print(f"pep items get: {a.n / took:.0f}/s ({a.n} pipelined)")
            vset = [f"<iq type='set' id='v{i}'><vCard xmlns='vcard-temp'><FN>n{i}</FN></vCard></iq>"
                    for i in range(a.n)]
            took = pipelined(s, vset, b"type='result'")
            print(f"vcard set: {a.n / took:.0f}/s ({a.n} pipelined)")
            s.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
