"""``xmppdctl``: manage local accounts (adduser, passwd, deluser, list), persistent
rooms (rooms, room-info, room-destroy), message archives (archive-purge) and the
database (backup, restore, migrate-storage).

Works on the same data directory as the server (SQLite in WAL mode, so it is
safe while the server runs). Passwords are read with a prompt on a terminal,
or as the first line of stdin otherwise (for scripts); never from argv.
``room-destroy`` also asks a running server to destroy the live room;
``status``, ``sessions``, ``kick``, ``announce``, ``reload`` and ``reset`` talk
to the running server through its admin socket (:mod:`xmppd.control`), and so
does ``deluser`` when a server runs (it ends the account's sessions too);
``restore`` refuses while a server uses the data directory (its rooms live
in memory and would overwrite the restored ones).

With ``storage = "postgresql"`` the same commands work on the PostgreSQL
database; ``backup`` then writes a logical copy into an SQLite file (a
snapshot, taken while servers run) and ``restore`` loads such a file
(stop every xmppd using the database first). pg_dump works as well.
``migrate-storage --to postgresql`` copies the data directory's SQLite
database into the (empty) PostgreSQL database of ``storage_dsn`` or ``--dsn``.
"""
import argparse
import getpass
import json
import sqlite3
import sys

import xmppd  # noqa: F401  (compat shim first)
from xmppd import config as configmod
from xmppd.storage.accounts import AccountError, AccountStore
from xmppd.storage.archive import ArchiveStore
from xmppd import storage
from xmppd.storage.db import StorageError
from xmppd.storage.rooms import RoomStore


def _read_password(confirm=True):
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    pw = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != pw:
        raise AccountError("the passwords do not match")
    return pw


def _username(arg, cfg):
    """Accept 'alice' or 'alice@<domain>'."""
    if "@" in arg:
        user, _, domain = arg.partition("@")
        if domain.lower() != cfg.domain:
            raise AccountError(f"{arg!r} is not an account of {cfg.domain}")
        return user
    return arg


def build_parser():
    p = argparse.ArgumentParser(prog="xmppdctl", description="Manage xmppd accounts, rooms and the database.")
    p.add_argument("--config", "-c", help="TOML config file (as given to the server)")
    p.add_argument("--data-dir", help="data directory (overrides the config file)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (("adduser", "create an account"), ("passwd", "change a password"),
                           ("deluser", "delete an account")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("user", help="username or bare JID")
    sub.add_parser("list", help="list accounts")
    sub.add_parser("rooms", help="list persistent rooms")
    sp = sub.add_parser("room-info", help="show a persistent room's configuration and affiliations")
    sp.add_argument("room", help="room JID (room@conference.domain) or room name")
    sp = sub.add_parser("room-destroy", help="destroy a persistent room (also in a running server)")
    sp.add_argument("room", help="room JID (room@conference.domain) or room name")
    sub.add_parser("status", help="live server: uptime, sessions, rooms, memory")
    sub.add_parser("sessions", help="live server: list the sessions")
    sp = sub.add_parser("kick", help="live server: end the sessions of a JID (bare: all of them)")
    sp.add_argument("jid", help="bare or full JID")
    sp = sub.add_parser("announce", help="live server: send a headline to every online session")
    sp.add_argument("text", help="the announcement")
    sub.add_parser("reload", help="live server: re-read the configuration and certificates")
    sub.add_parser("reset", help="live server: end all sessions, drop all rooms, delete all data "
                                 "(only with --insecure-auth or allow_reset = true)")
    sp = sub.add_parser("archive-purge", help="delete archived messages (MAM) of an account or "
                        "a room, or of every archive, older than a date")
    who = sp.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="username or bare JID whose archive to purge")
    who.add_argument("--room", help="room JID or room name whose archive to purge")
    who.add_argument("--all", action="store_true", help="every archive")
    sp.add_argument("--before", help="only messages older than this date/time "
                    "(2026-01-31 or 2026-01-31T12:00:00Z; default: everything)")
    sp = sub.add_parser("backup", help="write a consistent copy of the database (server may run)")
    sp.add_argument("path", help="backup file to write")
    sp = sub.add_parser("restore", help="replace the database with a backup (server stopped)")
    sp.add_argument("path", help="backup file to read")
    sp = sub.add_parser("migrate-storage", help="copy the SQLite database into PostgreSQL")
    sp.add_argument("--to", required=True, choices=["postgresql"], help="target backend")
    sp.add_argument("--dsn", help="PostgreSQL connection string (default: storage_dsn)")
    return p


def _room_jid(arg, cfg):
    if "@" in arg:
        return arg.lower()
    return f"{arg.lower()}@{cfg.muc_domain}"


def _room_command(args, cfg, db):
    rooms = RoomStore(db, cfg)
    if args.command == "rooms":
        for rec in sorted(rooms.load_all(), key=lambda r: r["jid"]):
            conf = rec["config"]
            counts = {}
            for aff, _ in rec["affiliations"].values():
                counts[aff] = counts.get(aff, 0) + 1
            flags = [k for k in ("public", "members_only", "moderated") if conf.get(k)]
            if conf.get("password"):
                flags.append("password")
            if conf.get("tombstone"):
                flags.append("tombstone")   # a destroyed room's address (features/tombstones.py)
            affs = " ".join(f"{k}s={v}" for k, v in sorted(counts.items()))
            name = conf.get("name") or ""
            print(f"{rec['jid']}\t{name!r}\t{','.join(flags) or '-'}\t{affs}")
        return 0
    jid = _room_jid(args.room, cfg)
    if args.command == "room-info":
        recs = [r for r in rooms.load_all() if r["jid"] == jid]
        if not recs:
            print(f"xmppdctl: no persistent room {jid}", file=sys.stderr)
            return 1
        rec = recs[0]
        conf = dict(rec["config"])
        for secret in ("password", "occupant_id_salt"):   # (the salt keys XEP-0421 ids)
            if conf.get(secret):
                conf[secret] = "(set)"
        print(json.dumps({"jid": jid, "config": conf,
                          "affiliations": {b: {"affiliation": a, **d}
                                           for b, (a, d) in sorted(rec["affiliations"].items())}},
                         indent=2, sort_keys=True))
        return 0
    # room-destroy
    if not rooms.has_room(jid):
        print(f"xmppdctl: no persistent room {jid}", file=sys.stderr)
        return 1
    rooms.delete_room(jid)
    ArchiveStore(db, cfg).delete_archive(jid)
    storage.enqueue_request(db, "room-destroy", jid)   # a running server destroys the live room
    print(f"destroyed {jid}")
    return 0


def _migrate_storage(args, cfg):
    """Copy ``<data_dir>/xmppd.sqlite3`` into an empty PostgreSQL database."""
    from xmppd.storage.copy import copy_database
    from xmppd.storage.postgresql import PgDatabase
    dsn = args.dsn or cfg.storage_dsn
    if not dsn:
        raise StorageError("give the PostgreSQL database with --dsn or storage_dsn")
    src = storage.open_database(cfg.data_dir)
    try:
        dst = PgDatabase(dsn)
        try:
            counts = copy_database(src, dst)
        finally:
            dst.close()
    finally:
        src.close()
    print(f"copied {src.path} to {dst.path}: "
          + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
    print('now set storage = "postgresql" and storage_dsn in the configuration')
    return 0


def _pg_backup_command(args, cfg, db):
    """PostgreSQL: backups are SQLite files holding a logical copy (same tables and rows)."""
    import os
    import shutil
    from xmppd.storage.copy import copy_database
    from xmppd.storage.db import Database
    if args.command == "backup":
        tmp = f"{args.path}.tmp-{os.getpid()}"
        try:
            dest = Database(tmp)
            try:
                copy_database(db, dest)
            finally:
                dest.close()
            dest_conn = sqlite3.connect(tmp, isolation_level=None)
            dest_conn.execute("PRAGMA journal_mode=DELETE")    # one self-contained file
            dest_conn.close()
            os.replace(tmp, args.path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(tmp + suffix):
                    os.unlink(tmp + suffix)
        print(f"backup of {db.path} written to {args.path}")
        return 0
    if not os.path.isfile(args.path):
        raise StorageError(f"backup {args.path} does not exist")
    tmp = f"{args.path}.restore-{os.getpid()}"
    shutil.copyfile(args.path, tmp)        # opening migrates; the backup itself stays as it is
    try:
        src = Database(tmp)
        try:
            version = src.migrated_from
            copy_database(src, db, replace=True)
        finally:
            src.close()
    finally:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(tmp + suffix):
                os.unlink(tmp + suffix)
    print(f"restored {args.path} into {db.path} (schema version {version}, now {db.version}); "
          "restart every xmppd using this database")
    return 0


def _parse_before(text):
    import datetime
    raw = text.strip()
    try:
        if "T" not in raw:
            dt = datetime.datetime.fromisoformat(raw).replace(tzinfo=datetime.timezone.utc)
        else:
            dt = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise AccountError(f"--before {text!r} is not a date (2026-01-31 or 2026-01-31T12:00:00Z)")
    return dt.timestamp()


def _archive_command(args, cfg, db):
    """Purge archived messages; the running server sees it at once (same SQLite file)."""
    before = _parse_before(args.before) if args.before else None
    if args.user:
        owner = f"{_username(args.user, cfg)}@{cfg.domain}"
    elif args.room:
        owner = _room_jid(args.room, cfg)
    else:
        owner = None
    n = ArchiveStore(db, cfg).purge(owner, before)
    if owner is not None and owner.endswith("@" + cfg.muc_domain):
        # a running server reloads the room's join history from what is left
        storage.enqueue_request(db, "archive-purged", owner)
    print(f"purged {n} archived messages" + (f" of {owner}" if owner else ""))
    return 0


def _db_command(args, cfg, db):
    if db.backend == "postgresql":
        return _pg_backup_command(args, cfg, db)
    if args.command == "backup":
        db.backup(args.path)
        print(f"backup written to {args.path}")
        return 0
    if storage.server_running(cfg.data_dir):
        print(f"xmppdctl: a server is using {cfg.data_dir}; stop it before restoring",
              file=sys.stderr)
        return 1
    version = db.restore_from(args.path)
    print(f"restored {args.path} (schema version {version}, now {db.version})")
    return 0


LIVE_COMMANDS = ("status", "sessions", "kick", "announce", "reload", "reset")


def _live_command(args, cfg):
    """Commands for the running server, through its admin socket (xmppd.control)."""
    from xmppd import control
    arg = getattr(args, "jid", None) or getattr(args, "text", None)
    try:
        result = control.request(cfg.data_dir, args.command, arg)
    except control.CommandError as e:
        print(f"xmppdctl: {args.command}: {e}", file=sys.stderr)
        return 1
    if args.command == "status":
        mem = result.get("memory_rss")
        conns = result.get("connections") or {}
        print(f"xmppd {result['version']} (pid {result['pid']}) serving {result['domain']}")
        print(f"uptime: {_duration(result['uptime'])}")
        print(f"sessions: {result['sessions']} ({result['online_users']} users online); "
              f"connections: " + ", ".join(f"{n} {k}" for k, n in sorted(conns.items())))
        print(f"rooms: {result['rooms']} ({result['occupants']} occupants)")
        if mem is not None:
            print(f"memory: {mem / 1048576:.1f} MiB resident")
    elif args.command == "sessions":
        for s in result:
            print(f"{s['jid']}\t{s['peer'] or '-'}\t{'available' if s['available'] else '-'}")
    elif args.command == "kick":
        print(f"ended {result['ended']} session(s) of {args.jid}")
    elif args.command == "announce":
        print(f"announcement sent to {result['sent']} session(s)")
    elif args.command == "reload":
        print(result)
    elif args.command == "reset":
        print(f"reset: ended {result['sessions']} session(s), destroyed {result['rooms']} "
              "room(s), deleted all data")
    return 0


def _deluser_live(cfg, user):
    """Delete through the running server when there is one, so that it ends the account's
    sessions and forgets what it holds in memory (xmppd.services.accounts); False when no
    server runs on this data dir. A refusal by a running server raises AccountError."""
    from xmppd import control
    try:
        result = control.request(cfg.data_dir, "deluser", f"{user}@{cfg.domain}")
    except control.NotRunning:
        return False
    except control.CommandError as e:
        raise AccountError(str(e))
    ended = result.get("ended", 0)
    print(f"deleted {result['jid']}" + (f" ({ended} session(s) ended)" if ended else ""))
    return True


def _duration(seconds):
    seconds = int(seconds)
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        cfg = configmod.load(args.config, {"data_dir": args.data_dir})
        if args.command in LIVE_COMMANDS:
            return _live_command(args, cfg)
        if args.command == "migrate-storage":
            return _migrate_storage(args, cfg)
        db = storage.open_configured_database(cfg)
    except (configmod.ConfigError, StorageError) as e:
        print(f"xmppdctl: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        print(f"xmppdctl: cannot open storage in {args.data_dir or 'the data dir'}: {e}",
              file=sys.stderr)
        return 1
    try:
        if args.command in ("rooms", "room-info", "room-destroy"):
            return _room_command(args, cfg, db)
        if args.command in ("backup", "restore"):
            return _db_command(args, cfg, db)
        if args.command == "archive-purge":
            return _archive_command(args, cfg, db)
        accounts = AccountStore(db, cfg)
        if args.command == "list":
            for name in accounts.list():
                print(f"{name}@{cfg.domain}")
            return 0
        user = _username(args.user, cfg)
        if args.command == "adduser":
            name = accounts.create(user, _read_password())
            print(f"created {name}@{cfg.domain}")
        elif args.command == "passwd":
            accounts.passwd(user, _read_password())
            print(f"password changed for {user}@{cfg.domain}")
        elif args.command == "deluser":
            if not _deluser_live(cfg, user):
                storage.delete_account_data(db, cfg, user)
                print(f"deleted {user}@{cfg.domain}")
        return 0
    except (AccountError, StorageError) as e:
        print(f"xmppdctl: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if not isinstance(e, (OSError, sqlite3.Error)) and \
                not type(e).__module__.startswith("psycopg"):
            raise
        print(f"xmppdctl: {args.command} failed: {e}", file=sys.stderr)
        return 1
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
