"""Per-account personal data: PEP nodes and items, vCards, private XML storage.

Tables (migration 5): ``pep_nodes`` (one row per node, its configuration as
JSON), ``pep_items`` (the payload of each item serialised, ``id`` orders
them by publication), ``pep_subscriptions`` (explicit XEP-0060
subscriptions, by subscriber JID), ``vcards`` (XEP-0054, the vCard
serialised) and ``private_xml`` (XEP-0049, one element per namespace).

The SQL is written once for both backends (SQLite and PostgreSQL, the
same migration 7 in each). Every method that changes several rows does it
in one transaction, with the
limits checked inside it (so two concurrent publishes cannot overshoot
``pep_max_nodes_per_account``, and nothing is ever half-written). Limit
violations raise :class:`LimitExceeded`; the service maps them to the
XEP's error. In the server all calls go through
:class:`AsyncPersonalStore` (writer thread, Deferreds), so reads see every
write queued before them.

``delete_account`` removes every row of an account; ``xmppdctl deluser``
and in-band unregistration call it next to the offline store's.
"""
import json


class LimitExceeded(Exception):
    """A per-account or per-node limit would be exceeded; ``what`` names it."""

    def __init__(self, what):
        super().__init__(what)
        self.what = what


class PersonalStore:
    def __init__(self, db, cfg):
        self.db = db
        self.cfg = cfg

    # -- PEP nodes ----------------------------------------------------------

    def node_config(self, username, node):
        rows = self.db.query("SELECT config FROM pep_nodes WHERE username = ? AND node = ?",
                             (username, node))
        return json.loads(rows[0][0]) if rows else None

    def nodes(self, username):
        """{node: config} of ``username``."""
        return {n: json.loads(c) for n, c in self.db.query(
            "SELECT node, config FROM pep_nodes WHERE username = ? ORDER BY node", (username,))}

    def create_node(self, username, node, config, max_nodes):
        """Create ``node``; False if it exists. LimitExceeded('nodes') past ``max_nodes``."""
        with self.db.transaction() as conn:
            return self._create(conn, username, node, config, max_nodes)

    def _create(self, conn, username, node, config, max_nodes):
        if conn.execute("SELECT 1 FROM pep_nodes WHERE username = ? AND node = ?",
                        (username, node)).fetchone():
            return False
        (count,) = conn.execute("SELECT COUNT(*) FROM pep_nodes WHERE username = ?",
                                (username,)).fetchone()
        if count >= max_nodes:
            raise LimitExceeded("nodes")
        conn.execute("INSERT INTO pep_nodes (username, node, config) VALUES (?, ?, ?)",
                     (username, node, json.dumps(config, sort_keys=True)))
        return True

    def publish(self, username, node, item_id, publisher, payload, new_config, max_nodes,
                check=None):
        """Store one item, creating the node with ``new_config`` if needed (auto-create).

        ``check(config)`` runs on an existing node's config inside the
        transaction (publish-options preconditions) and may raise. Items
        beyond the node's ``max_items`` are dropped, oldest first. Returns
        ``(config, created)``.
        """
        with self.db.transaction() as conn:
            row = conn.execute("SELECT config FROM pep_nodes WHERE username = ? AND node = ?",
                               (username, node)).fetchone()
            if row is None:
                self._create(conn, username, node, new_config, max_nodes)
                config, created = new_config, True
            else:
                config, created = json.loads(row[0]), False
                if check is not None:
                    check(config)
            conn.execute("DELETE FROM pep_items WHERE username = ? AND node = ? AND item_id = ?",
                         (username, node, item_id))
            conn.execute("INSERT INTO pep_items (username, node, item_id, publisher, payload) "
                         "VALUES (?, ?, ?, ?, ?)", (username, node, item_id, publisher, payload))
            self._trim(conn, username, node, config["max_items"])
        return config, created

    def _trim(self, conn, username, node, keep):
        conn.execute("DELETE FROM pep_items WHERE username = ? AND node = ? AND id NOT IN "
                     "(SELECT id FROM pep_items WHERE username = ? AND node = ? "
                     "ORDER BY id DESC LIMIT ?)", (username, node, username, node, keep))

    def configure(self, username, node, config):
        """Replace a node's config (and drop items beyond its new max_items); False if no node."""
        with self.db.transaction() as conn:
            cur = conn.execute("UPDATE pep_nodes SET config = ? WHERE username = ? AND node = ?",
                               (json.dumps(config, sort_keys=True), username, node))
            if cur.rowcount == 0:
                return False
            self._trim(conn, username, node, config["max_items"])
        return True

    def retract(self, username, node, item_id):
        """Remove one item; True if it existed."""
        cur = self.db.execute("DELETE FROM pep_items WHERE username = ? AND node = ? AND item_id = ?",
                              (username, node, item_id))
        return cur.rowcount > 0

    def items(self, username, node, ids=None, max_items=None):
        """[(item_id, publisher, payload)] oldest first: the ``max_items`` newest, or those in ``ids``."""
        if ids is not None:
            marks = ",".join("?" * len(ids))
            return self.db.query(
                f"SELECT item_id, publisher, payload FROM pep_items WHERE username = ? AND node = ? "
                f"AND item_id IN ({marks}) ORDER BY id", (username, node, *ids))
        if max_items is None:
            rows = self.db.query("SELECT item_id, publisher, payload FROM pep_items "
                                 "WHERE username = ? AND node = ? ORDER BY id DESC", (username, node))
        else:
            rows = self.db.query("SELECT item_id, publisher, payload FROM pep_items "
                                 "WHERE username = ? AND node = ? ORDER BY id DESC LIMIT ?",
                                 (username, node, max_items))
        rows = list(rows)
        rows.reverse()
        return rows

    def last_items(self, username, nodes):
        """{node: (item_id, publisher, payload)} of the newest item of each of ``nodes`` that has one."""
        out = {}
        for node in nodes:
            rows = self.items(username, node, max_items=1)
            if rows:
                out[node] = rows[0]
        return out

    def purge(self, username, node):
        self.db.execute("DELETE FROM pep_items WHERE username = ? AND node = ?", (username, node))

    def delete_node(self, username, node):
        """Delete a node with its items and subscriptions; the subscriber JIDs it had, or None."""
        with self.db.transaction() as conn:
            if not conn.execute("SELECT 1 FROM pep_nodes WHERE username = ? AND node = ?",
                                (username, node)).fetchone():
                return None
            subs = [r[0] for r in conn.execute(
                "SELECT jid FROM pep_subscriptions WHERE username = ? AND node = ?", (username, node))]
            for table in ("pep_items", "pep_subscriptions", "pep_nodes"):
                conn.execute(f"DELETE FROM {table} WHERE username = ? AND node = ?", (username, node))
        return subs

    # -- subscriptions ------------------------------------------------------

    def subscribe(self, username, node, jid, max_subscribers):
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM pep_subscriptions WHERE username = ? AND node = ? "
                            "AND jid = ?", (username, node, jid)).fetchone():
                return
            (count,) = conn.execute("SELECT COUNT(*) FROM pep_subscriptions WHERE username = ? "
                                    "AND node = ?", (username, node)).fetchone()
            if count >= max_subscribers:
                raise LimitExceeded("subscribers")
            conn.execute("INSERT INTO pep_subscriptions (username, node, jid) VALUES (?, ?, ?)",
                         (username, node, jid))

    def unsubscribe(self, username, node, jid):
        cur = self.db.execute("DELETE FROM pep_subscriptions WHERE username = ? AND node = ? "
                              "AND jid = ?", (username, node, jid))
        return cur.rowcount > 0

    def subscribers(self, username, node):
        return [r[0] for r in self.db.query(
            "SELECT jid FROM pep_subscriptions WHERE username = ? AND node = ? ORDER BY jid",
            (username, node))]

    def subscriptions_of(self, jid):
        """[(username, node)] that ``jid`` (bare or full) subscribed to."""
        return self.db.query("SELECT username, node FROM pep_subscriptions WHERE jid = ?", (jid,))

    # -- vCards and private XML ---------------------------------------------

    def get_vcard(self, username):
        rows = self.db.query("SELECT vcard FROM vcards WHERE username = ?", (username,))
        return rows[0][0] if rows else None

    def set_vcard(self, username, vcard):
        self.db.execute("INSERT INTO vcards (username, vcard) VALUES (?, ?) "
                        "ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard",
                        (username, vcard))

    def get_private(self, username, namespace):
        rows = self.db.query("SELECT xml FROM private_xml WHERE username = ? AND namespace = ?",
                             (username, namespace))
        return rows[0][0] if rows else None

    def set_private(self, username, elements, max_bytes):
        """Store {namespace: xml} for ``username``; LimitExceeded('private') past ``max_bytes`` in total."""
        with self.db.transaction() as conn:
            for namespace, xml in elements.items():
                conn.execute("INSERT INTO private_xml (username, namespace, xml, size) "
                             "VALUES (?, ?, ?, ?) ON CONFLICT (username, namespace) "
                             "DO UPDATE SET xml = excluded.xml, size = excluded.size",
                             (username, namespace, xml, len(xml.encode("utf-8"))))
            (total,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM private_xml "
                                    "WHERE username = ?", (username,)).fetchone()
            if total > max_bytes:
                raise LimitExceeded("private")   # rolls the whole set back

    # -- account deletion ---------------------------------------------------

    def delete_account(self, username):
        """Plain statements: they join the transaction of ``storage.delete_account_data``."""
        for table in ("pep_items", "pep_subscriptions", "pep_nodes", "vcards", "private_xml"):
            self.db.execute(f"DELETE FROM {table} WHERE username = ?", (username,))
        # the account's own subscriptions to other accounts' nodes go too
        own = f"{username}@{self.cfg.domain}"
        self.db.execute("DELETE FROM pep_subscriptions WHERE jid = ? OR jid LIKE ? ESCAPE '\\'",
                        (own, _like_escape(own + "/") + "%"))


def _like_escape(s):
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class AsyncPersonalStore:
    """The server's view: every method of :class:`PersonalStore` runs on the writer thread.

    ``sync`` is a :class:`PersonalStore` on the reactor's read-only
    connection, for the one read that must answer at once (the avatar hash
    stamped on presence, cached by the caller).
    """

    def __init__(self, db, cfg, writer):
        self.sync = PersonalStore(db, cfg)
        self.cfg = cfg
        self.writer = writer

    def __getattr__(self, name):
        if name.startswith("_") or not hasattr(PersonalStore, name):
            raise AttributeError(name)

        def call(*args, **kwargs):
            return self.writer.run(lambda db: getattr(PersonalStore(db, self.cfg), name)(*args, **kwargs))
        return call
