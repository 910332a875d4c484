"""twistd entry point: command-line options and the service tree."""
import sys

from twisted.application import service
from twisted.python import usage

from xmppd import config as configmod


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run the xmppd XMPP server: c2s on --c2s-port and a Multi-User Chat service on "
                "conference.<domain>. Flags override the --config file.")
    optParameters = [
        ["config", "c", None, "Path to a TOML configuration file (see conf/xmppd.toml)."],
        ["domain", "d", None, "The XMPP domain served (default: localhost)."],
        ["c2s-port", "p", None, "TCP port for client connections (default: 5222; 0 = any free port, logged).", int],
        ["interface", "i", None, "Address to listen on (default: 127.0.0.1)."],
        ["data-dir", None, None, "Directory for storage and the generated certificate (default: ./xmppd-data)."],
        ["tls-cert", None, None, "PEM certificate (chain) for STARTTLS."],
        ["tls-key", None, None, "PEM private key for STARTTLS."],
        ["require-encryption", None, None, "auto|true|false: refuse authentication before STARTTLS (auto: only off on loopback)."],
    ]
    optFlags = [
        ["insecure-auth", None, "DEVELOPMENT ONLY: any username/password logs in; accounts are created on first login."],
        ["trace", None, "Log every stanza in and out with its session (credentials are never logged)."],
    ]

    def __init__(self):
        super().__init__()
        self["admins"] = []

    def opt_admin(self, jid):
        """A service administrator (bare JID): owner rights in every room. Repeatable."""
        self["admins"].append(jid)

    def postOptions(self):
        overrides = {
            "domain": self["domain"], "c2s_port": self["c2s-port"], "interface": self["interface"],
            "data_dir": self["data-dir"], "tls_cert": self["tls-cert"], "tls_key": self["tls-key"],
            "require_encryption": self["require-encryption"],
            "insecure_auth": True if self["insecure-auth"] else None,
            "trace": True if self["trace"] else None,
        }
        try:
            cfg = configmod.load(self["config"], overrides)
        except configmod.ConfigError as e:
            raise usage.UsageError(str(e))
        if self["admins"]:
            cfg.admins = list(cfg.admins) + self["admins"]
        self.config = cfg


def makeService(options):
    """Build the service tree: storage, router, server services, MUC, c2s listener."""
    from xmppd.server import build
    cfg = options.config
    try:
        return build(cfg)
    except configmod.ConfigError as e:
        sys.stderr.write(f"xmppd: {e}\n")
        raise SystemExit(1)
