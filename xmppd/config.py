"""Typed configuration: defaults, a TOML file, then command-line flags.

Every key of ``conf/xmppd.toml`` maps to one attribute of :class:`Config`.
Unknown keys and wrong types raise :class:`ConfigError` naming the key.
"""
import dataclasses
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
    data_dir: str = "xmppd-data"
    insecure_auth: bool = False     # dev mode: any user/password logs in
    require_encryption: str = "auto"  # "auto" | "true" | "false"
    tls_cert: str = ""              # PEM; empty -> self-signed dev cert in data_dir
    tls_key: str = ""
    admins: list = field(default_factory=list)  # service admins (bare JIDs)
    trace: bool = False             # log every stanza in/out
    # limits
    max_stanza_size: int = 256 * 1024
    max_preauth_size: int = 16 * 1024
    preauth_timeout: int = 30       # seconds to finish authentication
    idle_timeout: int = 0           # seconds without traffic; 0 = off
    max_connections_per_ip: int = 100
    max_resources_per_account: int = 16
    max_offline_messages: int = 100
    muc_max_history: int = 50
    muc_default_history: int = 20
    muc_max_rooms_per_creator: int = 0  # 0 = unlimited
    muc_max_occupants: int = 0          # 0 = unlimited unless the room says so

    def __post_init__(self):
        if not self.muc_domain:
            self.muc_domain = "conference." + self.domain

    @property
    def encryption_required(self):
        """'auto' means required unless we listen on loopback only (dev default)."""
        if self.require_encryption == "auto":
            return self.interface not in ("127.0.0.1", "::1", "localhost")
        return self.require_encryption == "true"


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def load(path=None, overrides=None):
    """Build a Config from an optional TOML file plus flag overrides."""
    values = {}
    if path:
        import tomllib
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}")
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}")
        values.update(_flatten(data))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in values.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown config key {key!r}")
        expected = type(getattr(Config(), key))
        if expected is int and isinstance(value, bool) or not isinstance(value, expected):
            raise ConfigError(f"config key {key!r} must be of type {expected.__name__},"
                              f" not {type(value).__name__}")
    cfg = Config(**values)
    if cfg.require_encryption not in ("auto", "true", "false"):
        raise ConfigError("config key 'require_encryption' must be 'auto', 'true' or 'false'")
    cfg.data_dir = os.path.abspath(cfg.data_dir)
    return cfg


def _flatten(data):
    """Accept top-level keys and [section] tables alike (section names are ignored)."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flatten(v))
        else:
            out[k.replace("-", "_")] = v
    return out
