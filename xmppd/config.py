"""Typed configuration: defaults, a TOML file, then command-line flags.

Every key of ``conf/xmppd.toml`` maps to one attribute of :class:`Config`.
Anything wrong (unknown key, wrong type, out-of-range value, unreadable
file) raises :class:`ConfigError` whose message names the key, so an
operator gets one line that says what to fix instead of a traceback.
"""
import dataclasses
import difflib
import ipaddress
import os
from dataclasses import dataclass, field


class ConfigError(Exception):
    """Invalid configuration; the message names the offending key."""


@dataclass
class Config:
    domain: str = "localhost"
    muc_domain: str = ""            # empty -> "conference." + domain
    interface: str = "127.0.0.1"
    c2s_port: int = 5222
    c2s_direct_tls_port: int = -1   # XEP-0368 TLS from the first byte; -1 = off, 0 = any free port
    data_dir: str = "xmppd-data"
    insecure_auth: bool = False     # dev mode: any user/password logs in
    require_encryption: str = "auto"  # "auto" | "true" | "false"
    tls_cert: str = ""              # PEM; empty -> self-signed dev cert in data_dir
    tls_key: str = ""
    admins: list = field(default_factory=list)  # service admins (bare JIDs)
    storage: str = "sqlite"         # "sqlite" (in data_dir) | "postgresql" (storage_dsn)
    storage_dsn: str = ""           # libpq connection string or URI, for storage = "postgresql"
    trace: bool = False             # log every stanza in/out
    log_format: str = "text"        # "text" | "json" (twistd: JSON lines on stdout)
    log_level: str = "info"         # debug | info | warn | error | critical
    metrics_port: int = 0           # Prometheus /metrics on its own port; 0 = off
    metrics_interface: str = "127.0.0.1"
    metrics_allow: list = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])  # who may read /metrics
    contact_info: list = field(default_factory=list)  # "kind=uri": XEP-0157 / XEP-0455 (outage=)
    allow_reset: bool = False       # xmppdctl reset may wipe the live server (test servers)
    # limits
    max_stanza_size: int = 256 * 1024
    max_preauth_size: int = 16 * 1024
    preauth_timeout: int = 30       # seconds to finish authentication
    idle_timeout: int = 0           # seconds without traffic; 0 = off
    max_connections_per_ip: int = 100   # 0 = unlimited
    read_rate_limit: int = 65536        # bytes/s read per session (2 s burst); 0 = off
    max_send_buffer: int = 16 * 1024 * 1024  # unsent bytes to a client that does not read; 0 = off
    max_auth_failures_per_account: int = 5   # in auth_failure_window -> temporary-auth-failure
    max_auth_failures_per_ip: int = 20
    auth_failure_window: int = 300      # seconds; 0 = no login throttling
    allow_registration: bool = False    # XEP-0077 in-band registration of new accounts
    max_registrations_per_ip: int = 5   # per registration_window; 0 = unlimited
    registration_window: int = 3600     # seconds
    accounts: list = field(default_factory=list)  # [{"name": ..., "password": ...}] created at start
    scram_iterations: int = 10000       # PBKDF2 rounds for new SCRAM keys (RFC 5802), 4096..10000000
    limits_exempt: list = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])  # per-IP limits skip these
    max_resources_per_account: int = 16
    max_offline_messages: int = 100
    max_blocklist_items: int = 1000     # JIDs one account may block (XEP-0191)
    smacks_max_resumption_time: int = 300   # s a dropped XEP-0198 session waits for a resume; 0 = no resumption
    smacks_max_unacked_stanzas: int = 500   # unacked stanzas kept per session before it is closed
    csi_max_held: int = 256             # stanzas held for an inactive client (XEP-0352) before a flush
    push_max_registrations: int = 5     # XEP-0357 App Server registrations per account (0 = push off)
    push_min_interval: int = 2          # s between two notifications to one registration (coalesced)
    push_include_sender: bool = True    # last-message-sender in notifications
    push_include_body: bool = False     # last-message-body in notifications (message content!)
    # personal data (PEP, vCard, private XML storage)
    pep_max_item_size: int = 128 * 1024      # bytes of one serialised PEP item payload
    pep_max_items_per_node: int = 256        # what max_items 'max' means; the cap of any node
    pep_max_nodes_per_account: int = 128
    pep_max_subscribers_per_node: int = 1000
    max_vcard_size: int = 128 * 1024         # bytes of a serialised vCard (with its PHOTO)
    max_private_storage: int = 256 * 1024    # bytes of XEP-0049 private XML per account
    caps_cache_size: int = 1000              # XEP-0115 verification strings remembered
    muc_max_history: int = 50
    muc_default_history: int = 20
    muc_max_rooms_per_creator: int = 0  # 0 = unlimited
    muc_max_occupants: int = 0          # 0 = unlimited unless the room says so
    muc_room_default_public: bool = False  # new rooms listed in disco#items (Prosody: hidden)
    muc_room_locking: bool = True       # new rooms admit nobody else until configured (as Prosody)
    muc_tombstones: bool = True         # destroyed persistent rooms answer <gone/> for a while
    muc_tombstone_expiry: int = 86400 * 31  # seconds a tombstone lasts (Prosody's default)
    muc_max_tombstones: int = 1000      # oldest tombstone dropped beyond this
    muc_max_registration_requests: int = 100  # pending XEP-0045 §9.9 requests per room
    muc_message_rate: int = 0           # groupchat/private messages per second per occupant; 0 = off
    muc_message_burst: int = 10         # messages an occupant may send at once before the rate applies
    # external components (XEP-0114); the listener runs only when components are configured
    components: list = field(default_factory=list)  # [{"domain": ..., "secret": ...}, ...]
    component_port: int = 5347
    component_interface: str = "127.0.0.1"
    component_read_rate_limit: int = 8 * 1024 * 1024  # bytes/s per component (2 s burst); 0 = off
    component_multicast_max: int = 1000  # XEP-0033 bcc recipients per stanza from a component; 0 = off
    # the web: one HTTP listener for WebSocket, BOSH, discovery, upload, the web client page
    http_port: int = 5280              # -1 = off; 0 = any free port (logged as "http listening on")
    http_interface: str = ""           # empty -> interface
    http_tls_port: int = -1            # -1 = off; HTTPS with the c2s certificate (0 = free port)
    http_cors_origins: list = field(default_factory=lambda: ["*"])  # allowed browser origins
    upload_domain: str = ""            # XEP-0363 service; empty -> "upload." + domain
    upload_max_size: int = 10 * 1024 * 1024    # bytes per file
    upload_quota: int = 100 * 1024 * 1024      # bytes stored per account; 0 = unlimited
    upload_slot_timeout: int = 300     # seconds a slot may wait for its PUT
    upload_expiry_days: int = 30       # files are deleted after this many days; 0 = kept
    upload_url: str = ""               # public base URL of the HTTP listener; empty -> http://interface:port
    web_console: str = "auto"          # /console: "auto" (on when the HTTP listener is on loopback), "true", "false"
    web_client_assets: str = "https://cdn.conversejs.org/14.0.0/dist"  # converse.js dist: URL or local dir
    # message archives (XEP-0313)
    archive_expires_after: int = 7 * 24 * 3600  # seconds a message stays archived; 0 = forever
    archive_cleanup_interval: int = 3600  # seconds between retention runs
    archive_max_page: int = 50          # most results one query returns (RSM max is capped to it)
    archive_max_pending: int = 20000    # messages waiting for the disk: clients paused at 1/2 (see conf)
    muc_log_by_default: bool = False    # new rooms archive their messages (muc#roomconfig_enablelogging)

    def __post_init__(self):
        if not self.muc_domain:
            self.muc_domain = "conference." + self.domain
        if not self.upload_domain:
            self.upload_domain = "upload." + self.domain

    @property
    def encryption_required(self):
        """'auto' means required unless we listen on loopback only (dev default)."""
        if self.require_encryption == "auto":
            return self.interface not in ("127.0.0.1", "::1", "localhost")
        return self.require_encryption == "true"


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_DEFAULTS = Config()
_TYPES = {name: type(getattr(_DEFAULTS, name)) for name in FIELDS}

# Integer keys that must be >= 1 (the rest of the integer keys must be >= 0).
_POSITIVE = {"max_stanza_size", "max_preauth_size", "max_resources_per_account",
             "smacks_max_unacked_stanzas", "csi_max_held",
             "pep_max_items_per_node",
             "archive_cleanup_interval", "archive_max_page", "archive_max_pending"}


def load(path=None, overrides=None, extra_admins=()):
    """Build a validated Config from an optional TOML file plus flag overrides.

    ``overrides`` maps Config attribute names to values; ``None`` means "not
    given" so the file (or the default) wins. ``extra_admins`` (repeatable
    ``--admin`` flags) are added to the file's ``admins`` rather than
    replacing them.
    """
    values = {}
    if path:
        values.update(_read_file(path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in list(values.items()):
        values[key] = _check_type(key, value)
    if extra_admins:
        values["admins"] = values.get("admins", []) + list(extra_admins)
    cfg = Config(**values)
    _validate(cfg)
    cfg.data_dir = os.path.abspath(os.path.expanduser(cfg.data_dir))
    return cfg


def _read_file(path):
    import tomllib
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid UTF-8")
    return _flatten(data, path)


def _flatten(data, path, prefix=""):
    """Accept top-level keys and [section] tables alike (sections only group keys)."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flatten(v, path, prefix + k + "."))
            continue
        key = k.replace("-", "_")
        if key not in FIELDS:
            hint = difflib.get_close_matches(key, FIELDS, n=1)
            raise ConfigError(f"unknown config key {prefix + k!r} in {path}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        out[key] = v
    return out


def _check_type(key, value):
    if key not in FIELDS:
        raise ConfigError(f"unknown config key {key!r}")
    expected = _TYPES[key]
    if key == "require_encryption" and isinstance(value, bool):
        return "true" if value else "false"     # `require_encryption = true` reads naturally
    if key == "components":
        return _check_components(value)
    if key == "accounts":
        return _check_accounts(value)
    if expected is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {key!r} must be a list of strings")
        return list(value)
    if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
        raise ConfigError(f"config key {key!r} must be of type {expected.__name__},"
                          f" not {type(value).__name__} ({value!r})")
    return value


def _check_accounts(value):
    """``[[accounts]]`` tables (name, password) or ``--user NAME:PASSWORD`` strings."""
    if not isinstance(value, list):
        raise ConfigError("config key 'accounts' must be a list of tables ([[accounts]] with name"
                          " and password)")
    out = []
    for entry in value:
        if isinstance(entry, str):
            name, sep, password = entry.partition(":")
            entry = {"name": name, "password": password} if sep else {"name": name}
        if not isinstance(entry, dict) or set(entry) - {"name", "password"}:
            raise ConfigError("config key 'accounts': each entry has a name and a password")
        name, password = entry.get("name"), entry.get("password")
        if not isinstance(name, str) or not name or not isinstance(password, str) or not password:
            raise ConfigError(f"config key 'accounts': {name!r} needs a name and a non-empty password"
                              " (--user NAME:PASSWORD)")
        try:
            from xmppd.storage.accounts import AccountError, prepare_username
            name = prepare_username(name.split("@", 1)[0])
        except AccountError as e:
            raise ConfigError(f"config key 'accounts': {e}")
        out.append({"name": name, "password": password})
    return out


def _check_components(value):
    """``[[components]]`` tables: a domain and a non-empty secret each, nothing else."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError("config key 'components' must be a list of tables"
                          " ([[components]] with domain and secret)")
    out = []
    for entry in value:
        unknown = set(entry) - {"domain", "secret"}
        if unknown:
            raise ConfigError(f"config key 'components': unknown key {sorted(unknown)[0]!r}"
                              " (each entry has domain and secret)")
        domain, secret = entry.get("domain"), entry.get("secret")
        if not isinstance(domain, str) or not domain:
            raise ConfigError("config key 'components': every entry needs a domain")
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"config key 'components': component {domain!r} needs a secret")
        out.append({"domain": domain, "secret": secret})
    return out


def _validate(cfg):
    from xmppd import jid as jidmod

    for key in ("domain", "muc_domain"):
        host = getattr(cfg, key)
        j = jidmod.parse_or_none(host)
        if not host or j is None or j.user is not None or j.resource is not None:
            raise ConfigError(f"config key {key!r} must be a domain name, not {host!r}")
        setattr(cfg, key, j.host)               # nameprep'd: compared with stanza JIDs later
    if cfg.upload_domain in (cfg.domain, cfg.muc_domain):
        raise ConfigError("config key 'upload_domain' must differ from 'domain' and 'muc_domain'")
    if cfg.muc_domain == cfg.domain:
        raise ConfigError("config key 'muc_domain' must differ from 'domain'")
    for key in ("interface", "component_interface", "metrics_interface"):
        iface = getattr(cfg, key)
        if iface != "localhost":
            try:
                ipaddress.ip_address(iface)
            except ValueError:
                raise ConfigError(f"config key {key!r} must be an IP address"
                                  f" (e.g. 127.0.0.1, ::1, 0.0.0.0, ::), not {iface!r}")
    if cfg.log_format not in ("text", "json"):
        raise ConfigError(f"config key 'log_format' must be 'text' or 'json', not {cfg.log_format!r}")
    if cfg.log_level not in ("debug", "info", "warn", "error", "critical"):
        raise ConfigError("config key 'log_level' must be one of debug, info, warn, error,"
                          f" critical, not {cfg.log_level!r}")
    if cfg.http_interface:
        try:
            ipaddress.ip_address(cfg.http_interface)
        except ValueError:
            raise ConfigError("config key 'http_interface' must be an IP address"
                              f" (or empty for 'interface'), not {cfg.http_interface!r}")
    for key in ("http_port", "http_tls_port"):
        if not -1 <= getattr(cfg, key) <= 65535:
            raise ConfigError(f"config key {key!r} must be -1 (off) or between 0 and 65535,"
                              f" not {getattr(cfg, key)}")
    for key in ("c2s_port", "component_port", "metrics_port"):
        if not 0 <= getattr(cfg, key) <= 65535:
            raise ConfigError(f"config key {key!r} must be between 0 and 65535,"
                              f" not {getattr(cfg, key)}")
    seen = set()
    for entry in cfg.components:
        j = jidmod.parse_or_none(entry["domain"])
        if j is None or j.user is not None or j.resource is not None:
            raise ConfigError(f"config key 'components': {entry['domain']!r} is not a domain name")
        if j.host == cfg.domain or j.host in seen:
            raise ConfigError(f"config key 'components': {j.host!r} is the server's domain"
                              " or listed twice")
        seen.add(j.host)
        entry["domain"] = j.host
    if cfg.storage not in ("sqlite", "postgresql"):
        raise ConfigError(f"config key 'storage' must be 'sqlite' or 'postgresql', not {cfg.storage!r}")
    if cfg.storage == "postgresql" and not cfg.storage_dsn:
        raise ConfigError("config key 'storage_dsn' must be set for storage = 'postgresql'"
                          " (e.g. 'host=/run/postgresql dbname=xmppd')")
    if not -1 <= cfg.c2s_direct_tls_port <= 65535:
        raise ConfigError("config key 'c2s_direct_tls_port' must be -1 (off) or between 0 and"
                          f" 65535, not {cfg.c2s_direct_tls_port}")
    if cfg.web_console not in ("auto", "true", "false"):
        raise ConfigError("config key 'web_console' must be 'auto', 'true' or 'false',"
                          f" not {cfg.web_console!r}")
    if cfg.require_encryption not in ("auto", "true", "false"):
        raise ConfigError("config key 'require_encryption' must be 'auto', 'true' or 'false',"
                          f" not {cfg.require_encryption!r}")
    for name, typ in _TYPES.items():
        if typ is int and name not in ("c2s_port", "component_port", "c2s_direct_tls_port",
                                       "metrics_port", "http_port", "http_tls_port"):
            low = 1 if name in _POSITIVE else 0
            if getattr(cfg, name) < low:
                raise ConfigError(f"config key {name!r} must be >= {low}, not {getattr(cfg, name)}")
    if not 4096 <= cfg.scram_iterations <= 10_000_000:
        raise ConfigError("config key 'scram_iterations' must be between 4096 (RFC 7677) and"
                          f" 10000000, not {cfg.scram_iterations}")
    for key in ("limits_exempt", "metrics_allow"):
        for net in getattr(cfg, key):
            try:
                ipaddress.ip_network(net, strict=False)
            except (TypeError, ValueError):
                raise ConfigError(f"config key {key!r} must list IP addresses or networks"
                                  f" (e.g. 127.0.0.0/8), not {net!r}")
    from xmppd.services.contact_info import parse as parse_contacts
    try:
        parse_contacts(cfg.contact_info)
    except ValueError as e:
        raise ConfigError(f"config key 'contact_info': {e}")
    admins = []
    for admin in cfg.admins:
        j = jidmod.parse_or_none(admin)
        if j is None or j.user is None or j.resource is not None:
            raise ConfigError(f"config key 'admins' must list bare JIDs (user@domain), not {admin!r}")
        admins.append(j.userhost())
    cfg.admins = admins
    if not cfg.data_dir:
        raise ConfigError("config key 'data_dir' must not be empty")
    if os.path.exists(cfg.data_dir) and not os.path.isdir(cfg.data_dir):
        raise ConfigError(f"config key 'data_dir': {cfg.data_dir} exists and is not a directory")
    _validate_tls(cfg)


def _validate_tls(cfg):
    """Both or neither of tls_cert/tls_key; readable PEM; the key belongs to the certificate."""
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        missing = "tls_key" if cfg.tls_cert else "tls_cert"
        raise ConfigError(f"config key {missing!r} must be set together with"
                          f" {'tls_cert' if missing == 'tls_key' else 'tls_key'!r}")
    if not cfg.tls_cert:
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def read(key):
        path = getattr(cfg, key)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as e:
            raise ConfigError(f"config key {key!r}: cannot read {path}: {e.strerror or e}")

    try:
        certs = x509.load_pem_x509_certificates(read("tls_cert"))
    except ValueError:
        raise ConfigError(f"config key 'tls_cert': {cfg.tls_cert} is not a PEM certificate")
    try:
        key = serialization.load_pem_private_key(read("tls_key"), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"config key 'tls_key': {cfg.tls_key} is not an unencrypted PEM private key")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if certs[0].public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        raise ConfigError(f"config key 'tls_key': {cfg.tls_key} does not match the certificate"
                          f" in {cfg.tls_cert}")
