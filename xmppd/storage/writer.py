"""The database writer: one thread with its own SQLite connection, off the reactor.

Every write of the running server goes through :meth:`Writer.run`, which
queues ``fn(db)`` for the writer thread and returns a Deferred that fires
(in the reactor thread) once the transaction is committed, or fails with
the exception. One thread means writes commit in the order they were
queued and never contend with each other for SQLite's write lock; the fsync
of ``synchronous=FULL`` costs the waiting client, not the reactor.

Before the storage service starts (tools that open the storage without a
reactor, e.g. account preparation scripts) and after it stopped, ``run``
executes inline on the caller's connection and returns an already-fired
Deferred, so the same store methods work there.
"""
from twisted.internet import defer, reactor, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from xmppd.storage.db import Database

log = Logger(namespace="xmppd.storage")


class Writer:
    def __init__(self, path, inline_db, synchronous=None):
        self.path = path
        self.inline_db = inline_db
        self.synchronous = synchronous
        self._pool = None
        self._db = None          # the writer thread's connection (touched in that thread only)

    @property
    def running(self):
        return self._pool is not None

    def start(self):
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="xmppd-db-writer")
            self._pool.start()

    def run(self, fn, *args, **kwargs):
        """Deferred result of ``fn(db, *args, **kwargs)`` run on the writer's connection."""
        if self._pool is None:
            return defer.maybeDeferred(fn, self.inline_db, *args, **kwargs)
        return threads.deferToThreadPool(reactor, self._pool, self._call, fn, args, kwargs)

    def _call(self, fn, args, kwargs):
        if self._db is None:
            self._db = Database(self.path, self.synchronous, check=False)
        return fn(self._db, *args, **kwargs)

    def _close(self, _db):
        if self._db is not None:
            self._db.close()
            self._db = None

    def stop(self):
        """Commit everything queued, close the connection, end the thread (Deferred)."""
        if self._pool is None:
            return defer.succeed(None)
        pool = self._pool
        d = threads.deferToThreadPool(reactor, pool, self._call_close)

        def done(result):
            self._pool = None
            pool.stop()
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("storage: closing the writer failed", f))
        return d

    def _call_close(self):
        self._close(None)
