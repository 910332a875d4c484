"""Message archives (XEP-0313) for accounts and rooms: one table, keyed by the owner's bare JID.

A row is one archived stanza: ``owner`` (the account's or the room's bare
JID), ``sid`` (the XEP-0359 stanza-id, which is also the MAM UID: random,
unguessable), ``stamp`` (arrival time), ``with_bare``/``with_full`` (the
peer for an account archive; the sender's real bare JID and occupant JID
for a room archive) and the stanza as XML text (``jabber:client`` default
namespace, as :func:`xmppd.wire.serialize.to_text` writes it).

The SQL is shared by both backends (SQLite, PostgreSQL: same tables, see
the migrations). Paging runs on the integer primary key (arrival order), so "one page after
UID x" is an index range scan whatever the archive's size: the indexes are
``(owner)`` (rowid order within an owner), ``(owner, with_bare)``, ``sid``
(unique) and ``(stamp)``, for retention and to turn a start/end time into
an id bound (ids grow with stamps in the whole table). Every index costs
each archived row a B-tree insert on the writer thread; the two
owner-prefixed ones cost the most (each batch touches one page per owner),
so there is no third (migration 10). :class:`ArchiveStore` is the synchronous SQL (the
writer thread, ``xmppdctl`` and tests); :class:`AsyncArchiveStore` is what
the server uses: appends are queued in memory and written in batches on the
writer thread (the fan-out never waits for the disk); queries and deletes
go to the writer thread behind every append queued before them.
"""
import json
import time

from twisted.internet import defer, reactor
from twisted.logger import Logger

log = Logger(namespace="xmppd.archive")

BATCH_MAX = 5000         # rows per transaction (each batch touches one index page per owner)


class ArchiveNotFound(Exception):
    """An id given in a query (after/before/ids) is not in the archive (XEP-0313 §4.1.3)."""


class ArchiveStore:
    def __init__(self, db, cfg=None):
        self.db = db
        self.cfg = cfg

    # -- writes --------------------------------------------------------------
    def append_many(self, rows):
        """Insert ``(owner, sid, stamp, with_bare, with_full, stanza)`` rows in one transaction."""
        with self.db.transaction() as conn:
            conn.executemany("INSERT INTO archive (owner, sid, stamp, with_bare, with_full, stanza)"
                             " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sid) DO NOTHING", rows)
        return len(rows)

    def delete_archive(self, owner):
        """Forget a whole archive (account deleted, room destroyed); returns the rows removed."""
        with self.db.transaction() as conn:
            n = conn.execute("DELETE FROM archive WHERE owner = ?", (owner,)).rowcount
            conn.execute("DELETE FROM archive_prefs WHERE owner = ?", (owner,))
        return n

    def delete_account(self, owner):
        """Same as :meth:`delete_archive`, joining the caller's transaction
        (:func:`xmppd.storage.delete_account_data`)."""
        self.db.execute("DELETE FROM archive WHERE owner = ?", (owner,))
        self.db.execute("DELETE FROM archive_prefs WHERE owner = ?", (owner,))

    def purge(self, owner=None, before=None):
        """Delete the messages of ``owner`` (None: every archive) older than ``before`` (None: all)."""
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if before is not None:
            where.append("stamp < ?")
            args.append(before)
        sql = "DELETE FROM archive" + (" WHERE " + " AND ".join(where) if where else "")
        with self.db.transaction() as conn:
            return conn.execute(sql, args).rowcount

    def replace(self, owner, sid, stanza):
        """Overwrite one archived stanza (a moderation tombstone, XEP-0425); True if it existed."""
        with self.db.transaction() as conn:
            return conn.execute("UPDATE archive SET stanza = ? WHERE owner = ? AND sid = ?",
                                (stanza, owner, sid)).rowcount > 0

    def set_prefs(self, owner, prefs):
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO archive_prefs (owner, prefs) VALUES (?, ?) "
                         "ON CONFLICT(owner) DO UPDATE SET prefs = excluded.prefs",
                         (owner, json.dumps(prefs, sort_keys=True)))
        return prefs

    # -- reads ---------------------------------------------------------------
    def get_prefs(self, owner):
        rows = self.db.query("SELECT prefs FROM archive_prefs WHERE owner = ?", (owner,))
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError:
            return None

    def count(self, owner):
        return self.db.query("SELECT COUNT(*) FROM archive WHERE owner = ?", (owner,))[0][0]

    def last(self, owner, limit):
        """The newest ``limit`` rows of an archive, oldest first: [(sid, stamp, with_bare, stanza)]."""
        rows = self.db.query("SELECT sid, stamp, with_bare, stanza FROM archive WHERE owner = ? "
                             "ORDER BY id DESC LIMIT ?", (owner, int(limit)))
        rows.reverse()
        return rows

    def _rowid(self, owner, sid):
        rows = self.db.query("SELECT id FROM archive WHERE sid = ? AND owner = ?", (sid, owner))
        if not rows:
            raise ArchiveNotFound(sid)
        return rows[0][0]

    def find(self, owner, q):
        """One page of a query (see :class:`xmppd.services.mam.Query` for ``q``).

        Returns ``(rows, complete, count)``: rows ``(sid, stamp, with_bare,
        stanza)`` in chronological order, ``complete`` True when nothing
        lies beyond the page in the paging direction; ``count`` (the size of
        the whole result set: form filters, no RSM anchors) only for
        ``max == 0``, else None (a page must stay cheap on a big archive).
        """
        where = ["owner = ?"]
        args = [owner]
        if q.with_bare is not None:
            where.append("with_bare = ?")
            args.append(q.with_bare)
        if q.with_full is not None:
            where.append("with_full = ?")
            args.append(q.with_full)
        # Times become id bounds (rows of every archive are appended in arrival order, so
        # stamps grow with ids in the whole table): a page stays an id range scan instead
        # of a sort of every row in the span, and the bound comes from the (stamp) index.
        if q.start is not None:
            rows = self.db.query("SELECT id FROM archive WHERE stamp >= ? "
                                 "ORDER BY stamp, id LIMIT 1", (q.start,))
            if not rows:
                return [], True, 0 if q.max == 0 else None
            where.append("id >= ?")
            args.append(rows[0][0])
        if q.end is not None:
            rows = self.db.query("SELECT id FROM archive WHERE stamp <= ? "
                                 "ORDER BY stamp DESC, id DESC LIMIT 1", (q.end,))
            if not rows:
                return [], True, 0 if q.max == 0 else None
            where.append("id <= ?")
            args.append(rows[0][0])
        if q.after_id is not None:
            where.append("id > ?")
            args.append(self._rowid(owner, q.after_id))
        if q.before_id is not None:
            where.append("id < ?")
            args.append(self._rowid(owner, q.before_id))
        if q.ids:
            for sid in q.ids:
                self._rowid(owner, sid)
            where.append("sid IN (%s)" % ",".join("?" * len(q.ids)))
            args.extend(q.ids)
        base = " AND ".join(where)
        base_args = list(args)
        reverse = q.rsm_before is not None
        if q.rsm_after is not None:
            where.append("id > ?")
            args.append(self._rowid(owner, q.rsm_after))
        if q.rsm_before:
            where.append("id < ?")
            args.append(self._rowid(owner, q.rsm_before))
        if q.max == 0:
            # RSM's way to ask for the size only (XEP-0059 §2.7); counting a big archive is
            # a scan of its index entries, so it is not done for every page
            count = self.db.query(f"SELECT COUNT(*) FROM archive WHERE {base}", base_args)[0][0]
            return [], count == 0, count
        rows = self.db.query(
            "SELECT sid, stamp, with_bare, stanza FROM archive WHERE " + " AND ".join(where) +
            (" ORDER BY id DESC" if reverse else " ORDER BY id") + " LIMIT ?", args + [q.max + 1])
        complete = len(rows) <= q.max
        rows = rows[:q.max]
        if reverse:
            rows.reverse()
        return rows, complete, None


class AsyncArchiveStore:
    """The server's archive: batched appends, everything else on the writer thread (Deferreds).

    :meth:`append` never touches the disk on the caller's thread: rows wait
    in memory until the writer is free, then go in one transaction (at most
    :data:`BATCH_MAX` rows; under load batches grow by themselves, since
    rows pile up while a commit runs). Once half of ``cfg.archive_max_pending``
    rows wait, ``pressure(True)`` asks the server to stop reading from
    clients (back-pressure: senders slow down, nothing is lost) until a
    quarter is left (``pressure(False)``). Only a writer stuck for
    ``STUCK_SECONDS`` (a dead disk) lifts the pause while still behind;
    then, at ``archive_max_pending`` rows, new rows are dropped (counted,
    logged), so memory stays bounded. A query first hands the waiting rows
    to the writer, so it sees every message archived before it (one
    thread, call order).
    """

    STUCK_SECONDS = 10

    def __init__(self, db, cfg, writer):
        self.sync_store = ArchiveStore(db, cfg)
        self.cfg = cfg
        self.writer = writer
        self.max_pending = getattr(cfg, "archive_max_pending", 20000)
        self._pending = []
        self._inflight = 0
        self._scheduled = None
        self.dropped = 0
        self.written = 0
        self.pressure = None         # fn(bool): the server's input pause (limits.InputPause)
        self._pressing = False
        self._stuck = None           # the timer that gives up waiting for a stuck writer

    def _run(self, method, *args):
        return self.writer.run(lambda db: getattr(ArchiveStore(db, self.cfg), method)(*args))

    # -- appends ---------------------------------------------------------------
    def append(self, owner, sid, stamp, with_bare, with_full, stanza):
        """Queue one row; False (dropped) when ``archive_max_pending`` rows already wait."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:     # 1, 2, 4, 8 ...: no log flood
                log.warn("archive: {n} messages dropped so far (the writer is behind by "
                         "{pending} rows; is the disk slow or full?)",
                         n=self.dropped, pending=len(self._pending))
            return False
        self._pending.append((owner, sid, stamp, with_bare, with_full, stanza))
        if not self._inflight and self._scheduled is None:
            self._scheduled = reactor.callLater(0, self._flush)
        if (not self._pressing and self.pressure is not None
                and len(self._pending) * 2 >= self.max_pending):
            self._pressing = True
            self.pressure(True)
            self._stuck = reactor.callLater(self.STUCK_SECONDS, self._give_up)
        return True

    def _relieved(self):
        if self._pressing and len(self._pending) * 4 <= self.max_pending:
            self._pressing = False
            if self._stuck is not None and self._stuck.active():
                self._stuck.cancel()
                self.pressure(False)
            self._stuck = None

    def _give_up(self):
        """The writer made no room for STUCK_SECONDS: serve clients again (rows may drop)."""
        self._stuck = None
        log.error("archive: the writer is stuck ({n} rows waiting for {s} s); reading from "
                  "clients again, new messages will not be archived once {max} rows wait",
                  n=len(self._pending), s=self.STUCK_SECONDS, max=self.max_pending)
        self.pressure(False)

    def _flush(self):
        self._scheduled = None
        if not self._pending:
            return
        batch = self._pending[:BATCH_MAX]
        del self._pending[:BATCH_MAX]
        self._inflight += 1
        d = self.writer.run(lambda db: ArchiveStore(db, self.cfg).append_many(batch))
        d.addCallbacks(self._written, self._failed, errbackArgs=(len(batch),))
        d.addBoth(self._done)

    def _written(self, n):
        self.written += n

    def _failed(self, f, n):
        log.failure("archive: writing {n} messages failed", f, n=n)

    def _done(self, _):
        self._inflight -= 1
        if self._pending and not self._inflight:
            self._flush()
        if self._pressing:
            self._relieved()

    def sync(self):
        """Hand every waiting row to the writer now (before a query, at shutdown)."""
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        while self._pending:
            self._flush()

    # -- the rest runs on the writer thread, behind the appends ------------------
    def find(self, owner, q):
        self.sync()
        return self._run("find", owner, q)

    def last(self, owner, limit):
        self.sync()
        return self._run("last", owner, limit)

    def count(self, owner):
        self.sync()
        return self._run("count", owner)

    def delete_archive(self, owner):
        self.sync()
        return self._run("delete_archive", owner)

    def delete_account(self, owner):
        """Same as :meth:`delete_archive`, joining the caller's transaction
        (:func:`xmppd.storage.delete_account_data`)."""
        self.db.execute("DELETE FROM archive WHERE owner = ?", (owner,))
        self.db.execute("DELETE FROM archive_prefs WHERE owner = ?", (owner,))

    def purge(self, owner=None, before=None):
        self.sync()
        return self._run("purge", owner, before)

    def replace(self, owner, sid, stanza):
        self.sync()
        return self._run("replace", owner, sid, stanza)

    def set_prefs(self, owner, prefs):
        return self._run("set_prefs", owner, prefs)

    def get_prefs_now(self, owner):
        """Synchronous single-row read on the reactor's connection (cached by the caller)."""
        return self.sync_store.get_prefs(owner)

    def last_now(self, owner, limit):
        """Synchronous read of the newest rows (room history after a restart: committed rows)."""
        return self.sync_store.last(owner, limit)


def expire(store, max_age, now=None):
    """Retention: delete every archived message older than ``max_age`` seconds (a Deferred
    with the count for the async store). ``max_age`` 0 keeps everything."""
    if max_age <= 0:
        return defer.succeed(0) if isinstance(store, AsyncArchiveStore) else 0
    cutoff = (time.time() if now is None else now) - max_age
    return store.purge(None, cutoff)
