"""Offline messages (XEP-0160): stanzas kept for an account until it comes online.

The stanza is stored serialised (``jabber:client`` default namespace) with
the time it arrived; the delivering service re-parses it and adds the
``urn:xmpp:delay`` stamp. The per-account bound is enforced inside the same
transaction as the insert, so concurrent writers cannot overshoot it.
"""
import time


class OfflineStore:
    def __init__(self, db, cfg):
        self.db = db
        self.cfg = cfg

    def store(self, username, stanza_xml, limit, stamp=None):
        """Append one message for ``username``; False (nothing stored) if it already has ``limit``."""
        with self.db.transaction() as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM offline_messages WHERE username = ?",
                                    (username,)).fetchone()
            if count >= limit:
                return False
            conn.execute("INSERT INTO offline_messages (username, stamp, stanza) VALUES (?, ?, ?)",
                         (username, time.time() if stamp is None else stamp, stanza_xml))
        return True

    def count(self, username):
        return self.db.query("SELECT COUNT(*) FROM offline_messages WHERE username = ?",
                             (username,))[0][0]

    def peek(self, username):
        """The stored messages of ``username`` in arrival order: [(id, stamp, stanza_xml)]."""
        return self.db.query("SELECT id, stamp, stanza FROM offline_messages WHERE username = ? "
                             "ORDER BY id", (username,))

    def remove(self, username, upto_id):
        """Forget the messages of ``username`` up to and including ``upto_id`` (after delivery)."""
        self.db.execute("DELETE FROM offline_messages WHERE username = ? AND id <= ?",
                        (username, upto_id))

    def delete_account(self, username):
        self.db.execute("DELETE FROM offline_messages WHERE username = ?", (username,))


class AsyncOfflineStore(OfflineStore):
    """The server's offline store: every call runs on the writer thread and returns a Deferred.

    Reads go there too, so a ``peek`` sees every ``store`` queued before it
    and a ``remove`` never overtakes a ``store`` (one thread, call order).
    """

    def __init__(self, db, cfg, writer):
        super().__init__(db, cfg)
        self.writer = writer

    def _run(self, method, *args, **kwargs):
        return self.writer.run(lambda db: getattr(OfflineStore(db, self.cfg), method)(*args, **kwargs))

    def store(self, username, stanza_xml, limit, stamp=None):
        return self._run("store", username, stanza_xml, limit, stamp)

    def count(self, username):
        return self._run("count", username)

    def peek(self, username):
        return self._run("peek", username)

    def remove(self, username, upto_id):
        return self._run("remove", username, upto_id)

    def delete_account(self, username):
        return self._run("delete_account", username)
