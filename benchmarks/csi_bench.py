"""CSI traffic saving (XEP-0352): bytes written to an inactive client in a busy room vs an active one.

    python -m benchmarks.csi_bench [--occupants 50] [--rounds 10] [--bodies 2]

One room of ``occupants`` (two observers plus churning occupants). Observer A
stays active, observer B sends ``<inactive/>``. Then ``rounds`` times every
churning occupant changes its presence (show + status) and sends a
``composing`` then a ``paused`` chat state; in each round ``bodies`` of them
also send a groupchat message with a body (which flushes what B holds).
Finally B sends ``<active/>`` and both send a ping; the bytes each observer
received from the start of the churn up to its ping result are compared.
Prints one ``FIGURE`` JSON line per figure (same format as benchmarks.loadgen).
"""
import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.servers import start_xmppd

ROOM_FMT = "csibench{run}@conference.localhost"
MUC = "http://jabber.org/protocol/muc"
CSI = "urn:xmpp:csi:0"
HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")


class C:
    def __init__(self, port, user):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.bytes = 0
        import base64
        cred = base64.b64encode(f"\0{user}\0pw".encode()).decode()
        self.send(HEADER)
        self.until(b"</stream:features>")
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>")
        self.until(b"<success")
        self.send(HEADER)
        self.until(b"</stream:features>")
        self.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>r</resource></bind></iq>")
        self.until(b"</iq>")

    def send(self, text):
        self.s.sendall(text.encode())

    def until(self, marker, timeout=30):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.s.recv(65536)
            if not data:
                raise RuntimeError("connection closed")
            self.buf += data
            self.bytes += len(data)
        i = self.buf.index(marker) + len(marker)
        self.buf = self.buf[i:]

    def join(self, room, nick):
        self.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'><history maxstanzas='0'/></x>"
                  f"</presence>")
        self.until(b"<subject")

    def sync(self, tag):
        self.send(f"<iq type='get' id='{tag}'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.until(f"id='{tag}'".encode())


def run(port, occupants, rounds, bodies):
    room = ROOM_FMT.format(run=bodies)
    a, b = C(port, f"obs_active{bodies}"), C(port, f"obs_inactive{bodies}")
    a.join(room, "A")
    a.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='{MUC}#owner'>"
           f"<x xmlns='jabber:x:data' type='submit'/></query></iq>")   # instant room (unlock)
    a.until(b"id='cfg'")
    b.join(room, "B")
    churners = []
    for i in range(occupants - 2):
        c = C(port, f"occ{bodies}_{i}")
        c.join(room, f"n{i}")
        churners.append(c)
    b.send(f"<inactive xmlns='{CSI}'/>")
    b.sync("ready")
    a.sync("ready")
    a.bytes = b.bytes = 0
    a.buf = b.buf = b""
    shows = ("away", "chat", "dnd", "xa")
    for r in range(rounds):
        for i, c in enumerate(churners):
            c.send(f"<presence to='{room}/n{i}'><show>{shows[(r + i) % 4]}</show>"
                   f"<status>round {r}</status></presence>")
            c.send(f"<message to='{room}' type='groupchat'>"
                   f"<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
            if i < bodies:
                c.send(f"<message to='{room}' type='groupchat'><body>r{r} from {i}</body>"
                       f"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
            else:
                c.send(f"<message to='{room}' type='groupchat'>"
                       f"<paused xmlns='http://jabber.org/protocol/chatstates'/></message>")
    for c in churners:
        c.sync("done")
    a.sync("end")
    b.send(f"<active xmlns='{CSI}'/>")
    b.sync("end")
    for c in churners + [a, b]:
        c.s.close()
    return a.bytes, b.bytes


def figure(key, value, unit, **extra):
    print("FIGURE " + json.dumps({"key": key, "value": value, "unit": unit, **extra}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--occupants", type=int, default=50)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--bodies", type=int, default=2, help="occupants sending a body per round")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_xmppd(Path(tmp), None)
        try:
            results = {}
            for bodies in sorted({0, a.bodies}):
                active, inactive = run(server.port, a.occupants, a.rounds, bodies)
                saving = 100.0 * (1 - inactive / active) if active else 0.0
                results[bodies] = (active, inactive, saving)
                figure(f"csi_bytes_active_b{bodies}", active, "bytes")
                figure(f"csi_bytes_inactive_b{bodies}", inactive, "bytes")
                figure(f"csi_saving_b{bodies}", round(saving, 1), "%",
                       occupants=a.occupants, rounds=a.rounds, bodies_per_round=bodies)
        finally:
            server.proc.terminate()
            server.proc.wait(10)
    for bodies, (active, inactive, saving) in results.items():
        print(f"{a.occupants} occupants, {a.rounds} rounds, {bodies} body messages/round: "
              f"active {active} B, inactive {inactive} B, saved {saving:.1f} %", file=sys.stderr)


if __name__ == "__main__":
    main()
