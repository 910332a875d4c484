"""The database writer: one thread with its own SQLite connection, off the reactor.

Every write of the running server goes through :meth:`Writer.run`, which
queues ``fn(db)`` for the writer thread and returns a Deferred that fires
(in the reactor thread) once the transaction is committed, or fails with
the exception. One thread means writes commit in the order they were
queued and never contend with each other for SQLite's write lock; the fsync
of ``synchronous=FULL`` costs the waiting client, not the reactor.

Until the thread runs (tools that open the storage without a reactor, e.g.
account preparation scripts; server start-up before the reactor runs) and
after it stopped, ``run`` executes inline on the caller's connection and
returns an already-fired Deferred, so the same store methods work there.

The writer's SQLite connection gets a page cache of :data:`CACHE_KIB`
(SQLite's default is 2 MiB): message archives insert into per-owner index
ranges all over their indexes, and with the default cache every batch
re-read most of those pages (an archived row cost ~1.7x the CPU; see
benchmarks/PROFILE.md). The cache fills only as pages are used.
"""
import time

from twisted.internet import defer, reactor, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from xmppd.metrics import COMMIT_SECONDS
from xmppd.storage.db import Database

log = Logger(namespace="xmppd.storage")

CACHE_KIB = 16384       # the writer connection's SQLite page cache


class Writer:
    def __init__(self, path, inline_db, synchronous=None, opener=None):
        self.path = path
        self.opener = opener     # () -> the thread's connection (default: SQLite at ``path``)
        self.inline_db = inline_db
        self.synchronous = synchronous
        self._pool = None
        self._start_pending = False
        self._trigger = None
        self._db = None          # the writer thread's connection (touched in that thread only)
        self.pending = 0         # writes queued or running (the metrics' queue depth)

    def start(self):
        """Start the thread once the reactor runs.

        Its thread is not a daemon: started earlier, a start-up failure that
        exits before the reactor runs (e.g. a busy port) would hang at exit.
        Until then writes run inline (start-up only).
        """
        if self._pool is None and not self._start_pending:
            self._start_pending = True
            reactor.callWhenRunning(self._start_pool)

    def _start_pool(self):
        if not self._start_pending:
            return           # stopped before the reactor ran
        self._start_pending = False
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="xmppd-db-writer")
        self._pool.start()
        # if the reactor stops without stopService, still end the (non-daemon) thread
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self._stop_pool)

    def _stop_pool(self):
        self._trigger = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()      # queued writes run first, then the thread ends

    def run(self, fn, *args, **kwargs):
        """Deferred result of ``fn(db, *args, **kwargs)`` run on the writer's connection."""
        if self._pool is None:
            return defer.maybeDeferred(fn, self.inline_db, *args, **kwargs)
        self.pending += 1
        d = threads.deferToThreadPool(reactor, self._pool, self._call, fn, args, kwargs)
        d.addBoth(self._done)
        return d

    def _done(self, result):
        self.pending -= 1
        return result

    def _call(self, fn, args, kwargs):
        if self._db is None:
            if self.opener is not None:
                self._db = self.opener()
            else:
                self._db = Database(self.path, self.synchronous, check=False)
                self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        start = time.perf_counter()
        try:
            return fn(self._db, *args, **kwargs)
        finally:
            COMMIT_SECONDS.observe(time.perf_counter() - start)

    def stop(self):
        """Commit everything queued, close the connection, end the thread (Deferred)."""
        self._start_pending = False
        if self._pool is None:
            return defer.succeed(None)
        if self._trigger is not None:
            reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        d = threads.deferToThreadPool(reactor, self._pool, self._close)
        d.addErrback(lambda f: log.failure("storage: closing the writer's connection failed", f))
        d.addBoth(lambda _: self._stop_pool())
        return d

    def _close(self):
        if self._db is not None:
            self._db.close()
            self._db = None
