"""``twistd xmppd-muc``: the MUC as an XEP-0114 component process of any XMPP server.

    twistd -n xmppd-muc --server 127.0.0.1:5347 --domain conference.example.org \\
        --secret-file /etc/xmppd/muc.secret [--config /etc/xmppd/muc.toml]

The room code, features and storage are those of the built-in MUC
(:func:`xmppd.muc.service.make_external`); the configuration file takes the
same keys as the server's (``muc_*``, ``admins``, ``storage``,
``storage_dsn``, ``data_dir``). With ``storage = "postgresql"`` the MUC
node and the c2s node can share one database. The secret is never logged;
prefer ``--secret-file`` (or ``XMPPD_MUC_SECRET``) to ``--secret``, which
other local users can read in the process list.
"""
import os

from twisted.application import service
from twisted.python import usage

from xmppd import config as configmod
from xmppd.tap import EX_CONFIG, OneLineErrors, fail


class Options(OneLineErrors, usage.Options):
    synopsis = "--server HOST:PORT --domain MUC-DOMAIN (--secret-file PATH | --secret S) [options]"
    longdesc = ("Run xmppd's Multi-User Chat (XEP-0045) as an external component (XEP-0114) of "
                "an XMPP server (xmppd, Prosody, ejabberd...). The server must list the domain as "
                "a component with the same secret. Exit status 64: bad flags; 78: invalid "
                "configuration or the server refused the handshake.")
    optParameters = [
        ["server", "s", None, "The server's component port, HOST:PORT (e.g. 127.0.0.1:5347)."],
        ["domain", "d", None, "The component's domain, e.g. conference.example.org."],
        ["secret", None, None, "The shared secret (visible in the process list: prefer "
                               "--secret-file or the XMPPD_MUC_SECRET environment variable)."],
        ["secret-file", None, None, "A file whose first line is the shared secret."],
        ["config", "c", None, "TOML file with muc_*, admins, storage, storage_dsn, data_dir."],
        ["data-dir", None, None, "Directory for SQLite storage (default: ./xmppd-muc-data)."],
    ]

    def __init__(self):
        super().__init__()
        self["admins"] = []

    def opt_admin(self, jid):
        """A service administrator (bare JID): owner rights in every room. Repeatable."""
        self["admins"].append(jid)

    def postOptions(self):
        if not self["server"] or not self["domain"]:
            raise usage.UsageError("--server HOST:PORT and --domain are required")
        host, sep, port = self["server"].rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise usage.UsageError(f"--server must be HOST:PORT, not {self['server']!r}")
        self.host, self.port = host.strip("[]"), int(port)
        secret = self["secret"] or os.environ.get("XMPPD_MUC_SECRET")
        if self["secret-file"]:
            try:
                with open(self["secret-file"], encoding="utf-8") as fh:
                    secret = fh.readline().rstrip("\r\n")
            except OSError as e:
                raise configmod.ConfigError(f"cannot read --secret-file: {e.strerror or e}")
        if not secret:
            raise usage.UsageError("a secret is required (--secret-file, XMPPD_MUC_SECRET or --secret)")
        self.secret = secret
        domain = self["domain"]
        overrides = {"muc_domain": domain, "data_dir": self["data-dir"]}
        if not self["config"] and not self["data-dir"]:
            overrides["data_dir"] = "xmppd-muc-data"
        # 'domain' only has to differ from muc_domain here: no c2s runs in this process.
        if domain.startswith("localhost") or "." not in domain:
            overrides["domain"] = "invalid." + domain
        else:
            overrides["domain"] = domain.split(".", 1)[1]
        self.config = configmod.load(self["config"], overrides, extra_admins=self["admins"])


def makeService(options):
    from xmppd import storage
    from xmppd.muc.service import make_external
    from xmppd.tap import ServerService
    cfg = options.config
    try:
        root = service.MultiService()
        store = storage.open_storage(cfg)
        store.setServiceParent(root)
        comp = make_external(cfg, store, options.host, options.port, options.secret)
        comp.setServiceParent(root)
        from xmppd.services.admin_requests import install_room_destroy
        install_room_destroy(store, lambda: comp.muc)      # xmppdctl room-destroy
        return ServerService(root)
    except configmod.ConfigError as e:
        fail(str(e), EX_CONFIG)
    except OSError as e:
        fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), EX_CONFIG)
