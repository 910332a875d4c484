"""xmppd.config: defaults, the TOML file, flag overrides and validation.

A configuration mistake must stop the server with a message naming the key,
before anything listens; these tests pin down which mistakes are caught.
"""
import dataclasses
import datetime
import re
import tomllib
from pathlib import Path

import pytest

from xmppd import config
from xmppd.config import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "conf" / "xmppd.toml"


def write(tmp_path, text, name="xmppd.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_serve_localhost_on_loopback():
    cfg = config.load()
    assert (cfg.domain, cfg.muc_domain, cfg.interface, cfg.c2s_port) == (
        "localhost", "conference.localhost", "127.0.0.1", 5222)
    assert not cfg.insecure_auth and not cfg.trace
    assert cfg.tls_cert == "" and cfg.tls_key == ""   # -> generated self-signed certificate
    assert cfg.data_dir.endswith("xmppd-data") and Path(cfg.data_dir).is_absolute()
    assert cfg.encryption_required is False          # plain login allowed on loopback only


def test_encryption_required_off_loopback_and_when_forced():
    assert config.load(overrides={"interface": "0.0.0.0"}).encryption_required is True
    assert config.load(overrides={"interface": "::"}).encryption_required is True
    assert config.load(overrides={"require_encryption": "true"}).encryption_required is True
    assert config.load(overrides={"interface": "::", "require_encryption": "false"}
                       ).encryption_required is False


def test_file_values_apply_and_flags_override_them(tmp_path):
    path = write(tmp_path, 'domain = "example.org"\nc2s_port = 5333\ntrace = true\n'
                           '[limits]\nidle_timeout = 300\n')
    cfg = config.load(path)
    assert (cfg.domain, cfg.muc_domain, cfg.c2s_port, cfg.trace, cfg.idle_timeout) == (
        "example.org", "conference.example.org", 5333, True, 300)
    cfg = config.load(path, {"c2s_port": 0, "domain": "chat.example.net", "trace": None})
    assert (cfg.domain, cfg.muc_domain, cfg.c2s_port, cfg.trace) == (
        "chat.example.net", "conference.chat.example.net", 0, True)


def test_domains_are_normalised():
    cfg = config.load(overrides={"domain": "Example.ORG", "muc_domain": "Rooms.Example.ORG"})
    assert (cfg.domain, cfg.muc_domain) == ("example.org", "rooms.example.org")


def test_admins_from_file_and_flags_are_merged_and_normalised(tmp_path):
    path = write(tmp_path, 'admins = ["Boss@Localhost"]\n')
    cfg = config.load(path, extra_admins=["ops@localhost"])
    assert cfg.admins == ["boss@localhost", "ops@localhost"]


def test_require_encryption_accepts_toml_booleans(tmp_path):
    assert config.load(write(tmp_path, "require_encryption = true\n")).require_encryption == "true"
    assert config.load(write(tmp_path, "require_encryption = false\n")).require_encryption == "false"


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'c2s_prot'.*did you mean 'c2s_port'"):
        config.load(write(tmp_path, "c2s_prot = 5222\n"))
    with pytest.raises(ConfigError, match=r"unknown config key 'limits\.frobnicate'"):
        config.load(write(tmp_path, "[limits]\nfrobnicate = 1\n"))
    with pytest.raises(ConfigError, match=r"unknown config key 'nope'"):
        config.load(overrides={"nope": 1})


@pytest.mark.parametrize("line, key", [
    ('c2s_port = "5222"', "c2s_port"),
    ("c2s_port = 5222.0", "c2s_port"),
    ("c2s_port = true", "c2s_port"),
    ("insecure_auth = 1", "insecure_auth"),
    ('trace = "yes"', "trace"),
    ("domain = 5", "domain"),
    ('admins = "admin@localhost"', "admins"),
    ("admins = [1, 2]", "admins"),
    ("preauth_timeout = 1.5", "preauth_timeout"),
    ("require_encryption = 1", "require_encryption"),
    ('tls_cert = ["a"]', "tls_cert"),
])
def test_wrong_type_names_the_key(tmp_path, line, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}' must be"):
        config.load(write(tmp_path, line + "\n"))


@pytest.mark.parametrize("overrides, key", [
    ({"c2s_port": -1}, "c2s_port"),
    ({"c2s_port": 65536}, "c2s_port"),
    ({"interface": "localhost.example"}, "interface"),
    ({"interface": "300.1.1.1"}, "interface"),
    ({"domain": ""}, "domain"),
    ({"domain": "user@example.org"}, "domain"),
    ({"domain": "example.org/res"}, "domain"),
    ({"domain": "bad..example"}, "domain"),
    ({"muc_domain": "localhost"}, "muc_domain"),
    ({"require_encryption": "maybe"}, "require_encryption"),
    ({"admins": ["localhost"]}, "admins"),
    ({"admins": ["a@localhost/res"]}, "admins"),
    ({"max_stanza_size": 0}, "max_stanza_size"),
    ({"idle_timeout": -5}, "idle_timeout"),
    ({"muc_max_history": -1}, "muc_max_history"),
    ({"data_dir": ""}, "data_dir"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        config.load(overrides=overrides)


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"config key 'data_dir'.*not a directory"):
        config.load(overrides={"data_dir": str(afile)})


def test_unreadable_or_invalid_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        config.load(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"cannot read config file"):
        config.load(str(tmp_path))                       # a directory
    with pytest.raises(ConfigError, match=r"is not valid TOML.*line 2"):
        config.load(write(tmp_path, 'domain = "x"\nc2s_port = \n'))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('domain = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml"):
        config.load(str(bad))


# --- TLS files ---------------------------------------------------------------

def _pem_pair(tmp_path, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_valid_certificate_and_key_are_accepted(tmp_path):
    cert, key = _pem_pair(tmp_path, "a")
    cfg = config.load(overrides={"tls_cert": cert, "tls_key": key})
    assert (cfg.tls_cert, cfg.tls_key) == (cert, key)


def test_certificate_problems_name_the_key(tmp_path):
    cert, key = _pem_pair(tmp_path, "a")
    other_cert, other_key = _pem_pair(tmp_path, "b")
    junk = write(tmp_path, "not a pem file\n", "junk.pem")
    cases = [
        ({"tls_cert": cert}, r"'tls_key' must be set together with 'tls_cert'"),
        ({"tls_key": key}, r"'tls_cert' must be set together with 'tls_key'"),
        ({"tls_cert": str(tmp_path / "nope.crt"), "tls_key": key},
         r"'tls_cert': cannot read .*nope\.crt"),
        ({"tls_cert": cert, "tls_key": str(tmp_path / "nope.key")},
         r"'tls_key': cannot read .*nope\.key"),
        ({"tls_cert": junk, "tls_key": key}, r"'tls_cert': .* is not a PEM certificate"),
        ({"tls_cert": cert, "tls_key": junk}, r"'tls_key': .* is not an unencrypted PEM private key"),
        ({"tls_cert": key, "tls_key": key}, r"'tls_cert': .* is not a PEM certificate"),
        ({"tls_cert": cert, "tls_key": other_key}, r"'tls_key': .* does not match"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            config.load(overrides=overrides)
    assert other_cert


# --- conf/xmppd.toml -----------------------------------------------------------

COMMENTED_KEY = re.compile(r"^# ([a-z_0-9]+) = (.+)$")


def _example_settings():
    """Every `# key = value` line of the example file, uncommented."""
    found = {}
    for line in EXAMPLE.read_text().splitlines():
        m = COMMENTED_KEY.match(line)
        if m:
            found[m[1]] = tomllib.loads(f"v = {m[2]}")["v"]
    return found


def test_example_config_loads_as_shipped():
    cfg = config.load(str(EXAMPLE))
    assert cfg.domain == "localhost" and cfg.c2s_port == 5222


def test_example_config_documents_every_key_with_its_default():
    documented = _example_settings()
    assert set(documented) == set(config.FIELDS)
    for key, value in documented.items():
        if key in ("admins", "tls_cert", "tls_key"):
            continue                    # shown with an example value, default is empty
        f = config.FIELDS[key]
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        assert value == default, key


def test_example_config_with_every_key_uncommented_is_valid(tmp_path):
    settings = _example_settings()
    del settings["tls_cert"], settings["tls_key"]       # example paths do not exist here
    lines = [f"{k} = {v!r}".replace("True", "true").replace("False", "false")
             for k, v in settings.items()]
    cfg = config.load(write(tmp_path, "\n".join(lines) + "\n"))
    assert cfg.admins == ["admin@localhost"]
