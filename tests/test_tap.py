"""The twistd plugin as an operator meets it: --help, error exits, defaults, precedence.

Everything here runs the real command (`python -m twisted xmppd ...`) or the
real Options class; servers listen on free loopback ports.
"""
import signal
import socket
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import REPO_ROOT, server_command, server_env
from xmppd import tap

STREAM_HEADER = ("<?xml version='1.0'?><stream:stream to='{to}' xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
TWISTD = ("import sys; sys.argv[0] = 'twistd'; "
          "from twisted.scripts.twistd import run; run()")


def run_xmppd(*args, runner="twist"):
    """Run the plugin to completion (for --help and error exits)."""
    if runner == "twist":
        argv = server_command(*args)
    else:   # twistd, as installed users run it; cwd = repo root puts the plugin on sys.path
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "xmppd", *map(str, args)]
    return subprocess.run(argv, cwd=REPO_ROOT, env=server_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=20)


def read_until(sock, marker, limit=65536):
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        assert len(data) < limit
    return data


def open_stream(server, to=None):
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(STREAM_HEADER.format(to=to or server.domain).encode())
    return sock


# --- --help ----------------------------------------------------------------------

def test_help_documents_every_option_and_the_defaults():
    proc = run_xmppd("--help")
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())     # undo the help text's line wrapping
    for option in ("--config", "--domain", "--muc-domain", "--c2s-port", "--interface",
                   "--data-dir", "--tls-cert", "--tls-key", "--require-encryption",
                   "--insecure-auth", "--trace", "--admin"):
        assert option in out
    for default in ("default: localhost", "default: 5222", "default: 127.0.0.1",
                    "conference.<domain>", "conf/xmppd.toml"):
        assert default in out


# --- configuration errors ------------------------------------------------------------

def _error_cases(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("c2s_prot = 5222\n")
    wrongtype = tmp_path / "wrongtype.toml"
    wrongtype.write_text('trace = "yes"\n')
    broken = tmp_path / "broken.toml"
    broken.write_text("domain = \n")
    afile = tmp_path / "afile"
    afile.write_text("")
    return {
        "port-range": (["--c2s-port", "70000"], 78, "'c2s_port' must be between 0 and 65535"),
        "port-not-a-number": (["--c2s-port", "abc"], 78, "--c2s-port must be a number"),
        "missing-config": (["--config", tmp_path / "nope.toml"], 78, "cannot read config file"),
        "unknown-key": (["--config", unknown], 78, "unknown config key 'c2s_prot'"),
        "wrong-type": (["--config", wrongtype], 78, "'trace' must be of type bool"),
        "bad-toml": (["--config", broken], 78, "is not valid TOML"),
        "cert-junk": (["--tls-cert", junk, "--tls-key", junk], 78, "'tls_cert'"),
        "cert-missing": (["--tls-cert", tmp_path / "x.crt", "--tls-key", tmp_path / "x.key"],
                         78, "'tls_cert': cannot read"),
        "key-without-cert": (["--tls-key", junk], 78, "'tls_cert' must be set together"),
        "interface": (["--interface", "nowhere"], 78, "'interface' must be an IP address"),
        "admin": (["--admin", "nobody"], 78, "'admins' must list bare JIDs"),
        "data-dir-under-a-file": (["--data-dir", afile / "data"], 78, str(afile)),
        "unknown-flag": (["--bogus"], 64, "--bogus"),
    }


CASES = ["port-range", "port-not-a-number", "missing-config", "unknown-key", "wrong-type",
         "bad-toml", "cert-junk", "cert-missing", "key-without-cert", "interface", "admin",
         "data-dir-under-a-file", "unknown-flag"]


@pytest.mark.parametrize("case", CASES)
def test_invalid_configuration_exits_with_one_clear_line(tmp_path, case):
    cases = _error_cases(tmp_path)
    assert set(cases) == set(CASES)
    args, status, needle = cases[case]
    args = [*args, "--c2s-port", "0"] if "--c2s-port" not in args else args
    if "--data-dir" not in args:
        args += ["--data-dir", tmp_path / "data"]
    proc = run_xmppd(*args)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == status, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("xmppd: error: ") and needle in lines[0], lines


def test_twistd_reports_a_configuration_error_in_one_line_too(tmp_path):
    proc = run_xmppd("--c2s-port", "70000", "--data-dir", tmp_path / "data", runner="twistd")
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 78
    assert lines == ["xmppd: error: config key 'c2s_port' must be between 0 and 65535, not 70000"]


# --- Options in process ------------------------------------------------------------------

def test_no_options_mean_localhost_on_loopback_port_5222():
    opts = tap.Options()
    opts.parseOptions([])
    cfg = opts.config
    assert (cfg.domain, cfg.muc_domain, cfg.interface, cfg.c2s_port) == (
        "localhost", "conference.localhost", "127.0.0.1", 5222)
    assert (cfg.tls_cert, cfg.tls_key, cfg.insecure_auth) == ("", "", False)


def test_flags_override_the_file_and_admins_accumulate(tmp_path):
    conf = tmp_path / "xmppd.toml"
    conf.write_text('domain = "example.org"\nc2s_port = 5333\ninterface = "::1"\n'
                    'admins = ["boss@example.org"]\n')
    opts = tap.Options()
    opts.parseOptions(["--config", str(conf), "--c2s-port", "0", "--domain", "example.net",
                       "--admin", "ops@example.net", "--admin", "dev@example.net", "--trace"])
    cfg = opts.config
    assert (cfg.domain, cfg.muc_domain, cfg.c2s_port, cfg.interface, cfg.trace) == (
        "example.net", "conference.example.net", 0, "::1", True)
    assert cfg.admins == ["boss@example.org", "ops@example.net", "dev@example.net"]


def test_options_error_is_a_single_line_and_exit_status(capsys):
    with pytest.raises(SystemExit) as exc:
        tap.Options().parseOptions(["--require-encryption", "sometimes"])
    assert exc.value.code == 78
    err = capsys.readouterr().err
    assert err == ("xmppd: error: config key 'require_encryption' must be 'auto', 'true' or"
                   " 'false', not 'sometimes'\n")


# --- running servers -----------------------------------------------------------------------

def test_default_server_generates_a_self_signed_certificate_once(xmppd_server_factory, tmp_path):
    data = tmp_path / "store"
    server = xmppd_server_factory(insecure_auth=False, data_dir=data)
    assert server.interface == "127.0.0.1"
    assert "INSECURE" not in server.log()
    cert_path = data / "xmppd-dev-cert.pem"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "conference.localhost"} <= set(names.get_values_for_type(x509.DNSName))

    # STARTTLS presents exactly that certificate, valid for "localhost".
    sock = open_stream(server)
    features = read_until(sock, b"</stream:features>")
    assert b"urn:ietf:params:xml:ns:xmpp-tls" in features
    sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in read_until(sock, b"/>")
    ctx = ssl.create_default_context(cafile=str(cert_path))
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.getpeercert(binary_form=True) == cert.public_bytes(Encoding.DER)

    # A restart reuses the certificate instead of generating a new one.
    before = cert_path.read_bytes()
    server.stop()
    xmppd_server_factory(insecure_auth=False, data_dir=data)
    assert cert_path.read_bytes() == before


def test_config_file_with_flags_overriding_it(xmppd_server_factory, tmp_path):
    conf = tmp_path / "xmppd.toml"
    conf.write_text('domain = "example.org"\nc2s_port = 1\ntrace = false\n'
                    f'data_dir = "{tmp_path / "ignored"}"\n')
    server = xmppd_server_factory("--config", conf, "--trace", domain=None)
    server.domain, server.muc_domain = "example.org", "conference.example.org"
    assert server.port != 1                                 # --c2s-port 0 won over the file
    assert not (tmp_path / "ignored").exists()              # so did --data-dir
    sock = open_stream(server, to="example.org")
    reply = read_until(sock, b"</stream:features>")
    assert b"from='example.org'" in reply or b'from="example.org"' in reply
    sock.close()
    server.wait_for_log(r"OUT")                             # --trace (flag) beat trace = false


def test_insecure_auth_is_announced_loudly(xmppd_server):
    assert "INSECURE AUTH" in xmppd_server.log()


def test_sigterm_shuts_down_cleanly(xmppd_server):
    # A stream reply proves the reactor runs, so its SIGTERM handler is installed.
    with open_stream(xmppd_server) as sock:
        read_until(sock, b"</stream:features>")
        status = xmppd_server.stop()
    assert status in (0, -signal.SIGTERM)
    assert "Main loop terminated" in xmppd_server.log()
    assert "Traceback" not in xmppd_server.log()


def test_port_in_use_exits_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_xmppd("--c2s-port", port, "--data-dir", tmp_path / "data")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 71, out
    assert f"xmppd: error: cannot listen on 127.0.0.1:{port}: Address already in use" in out
    assert "Traceback" not in out
