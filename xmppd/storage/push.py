"""XEP-0357 push registrations: which App Server (JID + node) to notify for each account.

The push service keeps every registration in memory (the checks run on
message delivery, so they must be dict lookups); this store is read once at
start-up and written on every change. ``options`` is the enable request's
publish-options form as JSON (``[[var, [values...]], ...]``), already
validated and bounded by the service. The per-account bound is enforced by
the caller, which names the registrations to evict in the same transaction.
"""


class PushStore:
    def __init__(self, db, cfg):
        self.db = db
        self.cfg = cfg

    def load_all(self):
        """{username: [(jid, node, options, created), ...]} oldest first."""
        out = {}
        for username, jid, node, options, created in self.db.query(
                "SELECT username, jid, node, options, created FROM push_registrations "
                "ORDER BY created, jid, node"):
            out.setdefault(username, []).append((jid, node, options, created))
        return out

    def get(self, username):
        return [tuple(r) for r in self.db.query(
            "SELECT jid, node, options, created FROM push_registrations WHERE username = ? "
            "ORDER BY created, jid, node", (username,))]

    def put(self, username, jid, node, options, created, evict=()):
        """Add or replace (same jid and node) one registration; delete ``evict`` [(jid, node)]."""
        with self.db.transaction() as conn:
            for ejid, enode in evict:
                conn.execute("DELETE FROM push_registrations WHERE username = ? AND jid = ? "
                             "AND node = ?", (username, ejid, enode))
            conn.execute("INSERT INTO push_registrations (username, jid, node, options, created) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT (username, jid, node) DO UPDATE "
                         "SET options = excluded.options, created = excluded.created",
                         (username, jid, node, options, created))

    def remove(self, username, jid, node=None):
        """Delete the registration (jid, node), or every one for ``jid`` when node is None."""
        if node is None:
            self.db.execute("DELETE FROM push_registrations WHERE username = ? AND jid = ?",
                            (username, jid))
        else:
            self.db.execute("DELETE FROM push_registrations WHERE username = ? AND jid = ? "
                            "AND node = ?", (username, jid, node))

    def delete_account(self, username):
        self.db.execute("DELETE FROM push_registrations WHERE username = ?", (username,))


class AsyncPushStore(PushStore):
    """The server's store: writes run on the writer thread and return Deferreds."""

    def __init__(self, db, cfg, writer):
        super().__init__(db, cfg)
        self.writer = writer

    def _run(self, method, *args):
        return self.writer.run(lambda db: getattr(PushStore(db, self.cfg), method)(*args))

    def put(self, username, jid, node, options, created, evict=()):
        return self._run("put", username, jid, node, options, created, list(evict))

    def remove(self, username, jid, node=None):
        return self._run("remove", username, jid, node)

    def delete_account(self, username):
        return self._run("delete_account", username)
