"""Copying a whole database between backends (``xmppdctl migrate-storage``, PostgreSQL backups).

Rows are copied table by table, as they are, for every table both schemas
have (both are migrated to the same version first), parents before children
(foreign keys), in one transaction on the destination and from one snapshot
of the source. ``id`` sequences of PostgreSQL tables are moved past the
copied ids so new rows do not collide.
"""
from xmppd.storage.db import StorageError


def _columns(db, table):
    cur = db.execute(f'SELECT * FROM "{table}" LIMIT 0')
    return [d[0] for d in cur.description]


def _ordered(tables, sqlite_db):
    """Referenced tables first (foreign keys, read from the SQLite side's schema)."""
    deps = {t: {r[2] for r in sqlite_db.query(f'PRAGMA foreign_key_list("{t}")')} & set(tables)
            for t in tables}
    out = []
    while deps:
        ready = sorted(t for t, d in deps.items() if not d - set(out))
        if not ready:
            raise StorageError("cannot order tables by their foreign keys (a cycle)")
        out += ready
        for t in ready:
            del deps[t]
    return out


def copy_database(src, dst, replace=False):
    """Copy every row of ``src`` into ``dst``; ``dst`` must be empty unless ``replace``.

    Returns {table: rows copied}. One of the two is an SQLite database.
    """
    if src.version != dst.version:
        raise StorageError(f"schema versions differ ({src.version} and {dst.version})")
    sqlite_side = src if src.backend == "sqlite" else dst
    dst_tables = set(dst.tables())
    tables = _ordered([t for t in src.tables() if t in dst_tables], sqlite_side)
    counts = {}
    with src.transaction() as sconn, dst.transaction() as dconn:
        if src.backend == "postgresql":
            sconn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for t in tables:
            if dconn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone():
                if not replace:
                    raise StorageError(f"the destination is not empty (table {t} has rows); "
                                       "nothing was copied")
        for t in reversed(tables):
            dconn.execute(f'DELETE FROM "{t}"')
        for t in tables:
            cols = [c for c in _columns(src, t) if c in set(_columns(dst, t))]
            names = ", ".join(f'"{c}"' for c in cols)
            rows = sconn.execute(f'SELECT {names} FROM "{t}"').fetchall()
            if rows:
                dconn.executemany(f'INSERT INTO "{t}" ({names}) VALUES '
                                  f'({", ".join("?" for _ in cols)})', rows)
            counts[t] = len(rows)
            if dst.backend == "postgresql" and "id" in cols:
                dconn.execute(f"SELECT setval(pg_get_serial_sequence('\"{t}\"', 'id'), "
                              f'COALESCE((SELECT MAX(id) FROM "{t}"), 0) + 1, false)')
    return counts
