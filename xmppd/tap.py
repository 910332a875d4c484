"""twistd entry point: command-line options and the service tree.

Errors in the options or the configuration end the process with exactly one
line on stderr (``xmppd: error: ...``) and a non-zero status: 64 (EX_USAGE)
for malformed flags, 78 (EX_CONFIG) for an invalid configuration, 71
(EX_OSERR) when the port cannot be bound. twistd's
own handling would print the whole --help text above the message, which
buries the one line that matters.
"""
import os
import sys

from twisted.application import service
from twisted.internet.error import CannotListenError
from twisted.python import usage

from xmppd import config as configmod

EX_USAGE = 64
EX_OSERR = 71
EX_CONFIG = 78


def fail(message, status=EX_CONFIG):
    """Print one error line and exit; used before the reactor runs."""
    sys.stderr.write(f"xmppd: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


class OneLineErrors:
    """Mixin for twistd Options: a bad option or config is one line and an exit
    status (64 usage, 78 config) instead of twistd's usage dump."""

    def parseOptions(self, options=None):
        try:
            super().parseOptions(options)
        except configmod.ConfigError as e:
            fail(str(e), EX_CONFIG)
        except usage.UsageError as e:
            fail(f"{e} (see --help)", EX_USAGE)


class Options(OneLineErrors, usage.Options):
    synopsis = "[options]"
    longdesc = ("Run the xmppd XMPP server: client connections (c2s) on --c2s-port and a "
                "Multi-User Chat service on conference.<domain>. Settings come from the defaults, "
                "then the --config TOML file, then these flags (flags win). With no options it "
                "serves localhost on 127.0.0.1:5222 with a self-signed certificate generated in "
                "the data directory. Exit status 64: bad flags; 78: invalid configuration.")
    optParameters = [
        ["config", "c", None, "Path to a TOML configuration file (every key is documented in "
                              "conf/xmppd.toml)."],
        ["domain", "d", None, "The XMPP domain served (default: localhost)."],
        ["muc-domain", None, None, "The Multi-User Chat service's domain "
                                   "(default: conference.<domain>)."],
        ["c2s-port", "p", None, "TCP port for client connections (default: 5222; 0 = any free "
                                "port, logged as 'c2s listening on <interface>:<port>')."],
        ["c2s-direct-tls-port", None, None, "Port for Direct TLS client connections (XEP-0368, "
                                            "TLS from the first byte; default: off, -1)."],
        ["interface", "i", None, "IP address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for "
                                 "all)."],
        ["http-port", None, None, "TCP port of the HTTP listener: WebSocket, BOSH, discovery, "
                                  "upload, web client (default: 5280; 0 = any free port, logged as "
                                  "'http listening on <interface>:<port>')."],
        ["data-dir", None, None, "Directory for storage and the generated certificate "
                                 "(default: ./xmppd-data)."],
        ["tls-cert", None, None, "PEM certificate (chain) for STARTTLS (default: a self-signed "
                                 "certificate generated in the data directory)."],
        ["tls-key", None, None, "PEM private key for --tls-cert (unencrypted)."],
        ["require-encryption", None, None, "auto|true|false: refuse authentication before STARTTLS "
                                           "(default auto: required unless listening on loopback)."],
    ]
    optFlags = [
        ["insecure-auth", None, "DEVELOPMENT ONLY: any username/password logs in and the account "
                                "is created on first login (a warning is logged)."],
        ["trace", None, "Log every stanza in and out with its session, for client developers "
                        "(SASL credentials are never logged)."],
    ]

    def __init__(self):
        super().__init__()
        self["admins"] = []
        self["users"] = []

    def opt_user(self, spec):
        """A test account NAME:PASSWORD created (or its password reset) at start, for client
        test suites; repeatable, added to the config file's [[accounts]]. The password is
        visible in the process list: development only."""
        self["users"].append(spec)

    def opt_admin(self, jid):
        """A service administrator (bare JID, e.g. admin@localhost): owner rights in every room.
        Repeatable; added to the config file's admins."""
        self["admins"].append(jid)

    def postOptions(self):
        if self["config"] is not None and not os.path.isfile(self["config"]):
            # A directory "opens" on some systems; say plainly what is wrong.
            if os.path.isdir(self["config"]):
                raise configmod.ConfigError(f"config file {self['config']} is a directory")
        port = self["c2s-port"]
        if port is not None:
            try:
                port = int(port)
            except ValueError:
                raise configmod.ConfigError(f"option --c2s-port must be a number, not {port!r}")
        direct = self["c2s-direct-tls-port"]
        if direct is not None:
            try:
                direct = int(direct)
            except ValueError:
                raise configmod.ConfigError(f"option --c2s-direct-tls-port must be a number, not {direct!r}")
        http_port = self["http-port"]
        if http_port is not None:
            try:
                http_port = int(http_port)
            except ValueError:
                raise configmod.ConfigError(f"option --http-port must be a number, not {http_port!r}")
        self._overrides = {
            "http_port": http_port,
            "domain": self["domain"], "muc_domain": self["muc-domain"],
            "c2s_port": port, "c2s_direct_tls_port": direct, "interface": self["interface"],
            "data_dir": self["data-dir"], "tls_cert": self["tls-cert"], "tls_key": self["tls-key"],
            "require_encryption": self["require-encryption"],
            "insecure_auth": True if self["insecure-auth"] else None,
            "trace": True if self["trace"] else None,
        }
        self.config = self.load_config()

    def load_config(self):
        """Read the config file and apply the flags (at start and on every reload)."""
        cfg = configmod.load(self["config"], self._overrides, extra_admins=self["admins"])
        if self["users"]:
            cfg.accounts = cfg.accounts + configmod._check_accounts(self["users"])
        return cfg


class ServerService(service.MultiService):
    """The server's service tree, started so that a busy port gives one line, not a traceback.

    Both twistd and twist call startService before the reactor runs, so
    exiting here stops the process before it serves anything (status 71,
    EX_OSERR; systemd's Restart=on-failure retries, as the port may free up).
    """

    def __init__(self, tree, cfg=None):
        super().__init__()
        tree.setServiceParent(self)
        self.router = getattr(tree, "router", None)
        self.cfg = cfg

    def setServiceParent(self, parent):
        """Under twistd, hand it our log observer when the config asks for one (xmppd.logs)."""
        super().setServiceParent(parent)
        from xmppd import logs
        if self.cfg is not None:
            logs.set_level(self.cfg.log_level)
            if logs.wanted(self.cfg) and hasattr(parent, "setComponent"):
                from twisted.logger import ILogObserver
                parent.setComponent(ILogObserver, logs.observer(self.cfg.log_format))

    def startService(self):
        try:
            super().startService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            fail(f"cannot listen on {e.interface or '*'}:{e.port}: {reason}", EX_OSERR)


def makeService(options):
    """Build the service tree: storage, router, server services, MUC, c2s listener."""
    from xmppd.server import build
    cfg = options.config
    try:
        return ServerService(build(cfg, options.load_config), cfg)
    except configmod.ConfigError as e:
        fail(str(e), EX_CONFIG)
    except OSError as e:
        # e.g. a data_dir we may not write to: one line, not a traceback.
        fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), EX_CONFIG)
