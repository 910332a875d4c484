"""What message archiving (XEP-0313) costs per 1:1 message, in-process, in two halves.

    python -m benchmarks.mam_cost hooks     # reactor side: CPU us per message, MAM hooks on/off
    python -m benchmarks.mam_cost insert    # writer side: CPU us per archived row, per schema

``hooks``: parses 1:1 chat messages one at a time and hands each to
``Router.from_client`` then ``Router.route`` as the session does (stand-in
sessions that count the bytes written), with and without the archive's two
hooks (``client/message``, ``account/message``; the store only counts
rows). Best of 5 runs of CPU time (``time.process_time``).

``insert``: ``ArchiveStore.append_many`` in batches of ``--batch`` rows spread
over 200 owners, into a fresh database already holding ``--existing`` rows,
with the writer connection's settings (``xmppd.storage.writer.CACHE_KIB``);
then the same with one index left out each time, to show what each costs.
CPU us per row (the process's, so WAL writes and checkpoints count).

The chat benchmark runs both halves on one pinned core (the writer is a thread
of the server process): see benchmarks/PROFILE.md.
"""
import argparse
import os
import shutil
import tempfile
import time

import xmppd  # noqa: F401  (compat shim first)
from xmppd.config import Config
from xmppd.router import Router
from xmppd.wire import parser as wparser
from xmppd.wire.serialize import to_bytes

MESSAGE = (b"<message to='bob@localhost/r' type='chat'><body>Hello! This is a 1:1 benchmark "
           b"message of a typical size, &amp; a bit more text.</body></message>")


class _Session:
    def __init__(self, full):
        self.full = full
        self.bare, self.resource = full.split("/")
        self.full_escaped = full.encode()
        self.available = True
        self.priority = 0
        self.written = 0

    def deliver(self, el):
        self.write_stanza(to_bytes(el))

    def write_stanza(self, data):
        self.written += len(data)

    def write_patched(self, head, tail):
        self.write_stanza(head + self.full_escaped + tail)


class _Archive:
    rows = 0

    def append(self, *row):
        self.rows += 1
        return True

    def get_prefs_now(self, owner):
        return None


class _Store:
    archive = _Archive()


def _router(mam):
    r = Router(Config())
    r.user_exists = lambda user: True
    for user in ("alice", "bob"):
        r.sessions.add(_Session(f"{user}@localhost/r"))
    if mam:
        from xmppd.services import mam as m
        m.AccountArchive(r, r.cfg, _Store).install()
    return r


def hooks_run(r, n):
    sender = r.sessions.full["alice@localhost/r"]

    def on_element(el):
        el.attributes["from"] = sender.full
        if not r.from_client(el, sender):
            r.route(el)
    stream = wparser.new_stream(lambda root: None, on_element, lambda: None, 1 << 20)
    stream.parse(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    start = time.process_time()
    for _ in range(n):
        stream.parse(MESSAGE)
    return (time.process_time() - start) / n * 1e6


def hooks(a):
    for label, mam in (("no archive hooks", False), ("archive hooks (MAM)", True)):
        r = _router(mam)
        print(f"{label:22s} {min(hooks_run(r, a.messages) for _ in range(5)):6.2f} us CPU/message")


def insert(a):
    from xmppd.services.mam import new_id
    from xmppd.storage.archive import ArchiveStore
    from xmppd.storage.db import Database
    from xmppd.storage.writer import CACHE_KIB
    text = ("<message from='user1@localhost/b' to='user2@localhost/b' type='chat'><body>Hello! This is "
            "a 1:1 benchmark message of a typical size, &amp; a bit more text.</body><stanza-id "
            "xmlns='urn:xmpp:sid:0' by='user2@localhost' id='1a23ce63b28XeVwu4oROY8Q4H2g'/></message>")

    def rows(n):
        now = time.time()
        out = []
        for i in range(n):
            owner, peer = f"user{i % 200 + 1}@localhost", f"user{(i + 1) % 200 + 1}@localhost"
            out.append((owner, new_id(), now + i * 1e-5, peer, peer + "/b", text))
        return out

    for drop in (None, "archive_owner_with", "archive_owner", "archive_stamp"):
        d = tempfile.mkdtemp(prefix="xmppd-mam-cost-")
        try:
            db = Database(os.path.join(d, "x.sqlite3"))
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            if drop:
                db.execute(f"DROP INDEX {drop}")
            store = ArchiveStore(db)
            batch = a.batch
            existing = rows(a.existing)
            for i in range(0, len(existing), batch):
                store.append_many(existing[i:i + batch])
            new = rows(a.rows)
            start = time.process_time()
            for i in range(0, len(new), batch):
                store.append_many(new[i:i + batch])
            cpu = time.process_time() - start
            db.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        label = "all indexes" if drop is None else f"without {drop}"
        print(f"{label:28s} {cpu / a.rows * 1e6:6.1f} us CPU/row")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("hooks", "insert"))
    p.add_argument("--messages", type=int, default=20000, help="hooks: messages per run")
    p.add_argument("--rows", type=int, default=100000, help="insert: rows timed")
    p.add_argument("--existing", type=int, default=100000, help="insert: rows already archived")
    p.add_argument("--batch", type=int, default=5000, help="insert: rows per transaction")
    a = p.parse_args(argv)
    (hooks if a.part == "hooks" else insert)(a)


if __name__ == "__main__":
    main()
