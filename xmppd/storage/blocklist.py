"""Blocklists (XEP-0191): the JIDs each account blocks, as normalised strings.

The blocking service keeps every non-empty list in memory (the check runs on
every stanza to and from an account, so it must be a dict lookup); this store
is only read once at start-up and written on every change. The per-account
bound is checked by the caller against its in-memory list before it writes.
"""


class BlocklistStore:
    def __init__(self, db, cfg):
        self.db = db
        self.cfg = cfg

    def load_all(self):
        """Every non-empty blocklist: {username: set of JID strings}."""
        out = {}
        for username, jid in self.db.query("SELECT username, jid FROM blocklist"):
            out.setdefault(username, set()).add(jid)
        return out

    def get(self, username):
        return {row[0] for row in self.db.query("SELECT jid FROM blocklist WHERE username = ?",
                                                 (username,))}

    def add(self, username, jids):
        with self.db.transaction() as conn:
            conn.executemany("INSERT INTO blocklist (username, jid) VALUES (?, ?) "
                             "ON CONFLICT DO NOTHING",
                             [(username, j) for j in jids])

    def remove(self, username, jids=None):
        """Unblock ``jids``, or everything when ``jids`` is None."""
        if jids is None:
            self.db.execute("DELETE FROM blocklist WHERE username = ?", (username,))
            return
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM blocklist WHERE username = ? AND jid = ?",
                             [(username, j) for j in jids])

    def delete_account(self, username):
        self.remove(username)


class AsyncBlocklistStore(BlocklistStore):
    """The server's store: writes run on the writer thread and return Deferreds."""

    def __init__(self, db, cfg, writer):
        super().__init__(db, cfg)
        self.writer = writer

    def _run(self, method, *args):
        return self.writer.run(lambda db: getattr(BlocklistStore(db, self.cfg), method)(*args))

    def add(self, username, jids):
        return self._run("add", username, list(jids))

    def remove(self, username, jids=None):
        return self._run("remove", username, None if jids is None else list(jids))

    def delete_account(self, username):
        return self._run("delete_account", username)
