"""``xmppdctl``: manage local accounts (adduser, passwd, deluser, list).

Works on the same data directory as the server (SQLite in WAL mode, so it is
safe while the server runs). Passwords are read with a prompt on a terminal,
or as the first line of stdin otherwise (for scripts); never from argv.
"""
import argparse
import getpass
import sys

import xmppd  # noqa: F401  (compat shim first)
from xmppd import config as configmod
from xmppd.storage.accounts import AccountError, AccountStore
from xmppd.storage.db import Database


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
    p = argparse.ArgumentParser(prog="xmppdctl", description="Manage xmppd accounts.")
    p.add_argument("--config", "-c", help="TOML config file (as given to the server)")
    p.add_argument("--data-dir", help="data directory (overrides the config file)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (("adduser", "create an account"), ("passwd", "change a password"),
                           ("deluser", "delete an account")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("user", help="username or bare JID")
    sub.add_parser("list", help="list accounts")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        cfg = configmod.load(args.config, {"data_dir": args.data_dir})
        import os
        os.makedirs(cfg.data_dir, exist_ok=True)
        db = Database(os.path.join(cfg.data_dir, "xmppd.sqlite3"))
    except configmod.ConfigError as e:
        print(f"xmppdctl: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        print(f"xmppdctl: cannot open storage in {args.data_dir or 'the data dir'}: {e}",
              file=sys.stderr)
        return 1
    try:
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
            accounts.delete(user)
            print(f"deleted {user}@{cfg.domain}")
        return 0
    except AccountError as e:
        print(f"xmppdctl: {e}", file=sys.stderr)
        return 1
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
