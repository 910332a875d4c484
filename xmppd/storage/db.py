"""One SQLite database file shared by the stores (WAL, foreign keys on).

Each store creates its own tables in ``__init__`` with ``db.execute_script``.
Calls are synchronous for now; they are short single-row statements.
"""
import sqlite3


class Database:
    def __init__(self, path):
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA user_version")  # fails early on a corrupt file

    def execute_script(self, sql):
        self.conn.executescript(sql)

    def execute(self, sql, args=()):
        """Run one statement in its own transaction (autocommit)."""
        return self.conn.execute(sql, args)

    def query(self, sql, args=()):
        return self.conn.execute(sql, args).fetchall()

    def transaction(self):
        """``with db.transaction():`` groups statements atomically."""
        return _Tx(self.conn)

    def close(self):
        self.conn.close()


class _Tx:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
