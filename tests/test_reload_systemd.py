"""Reload on SIGHUP (certificate swap, bad config kept out, listeners re-bound, admins) and
systemd readiness/watchdog notifications, with a datagram socket standing in for systemd."""
import hashlib
import os
import signal
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization

from test_c2s_raw import Raw
from test_metrics import free_port
from xmppd.transports.tls import make_self_signed


def write_cert(directory, name):
    key, cert = make_self_signed(["localhost", "conference.localhost"])
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def served_cert(port):
    """SHA-256 of the certificate a new STARTTLS connection gets, and the live client."""
    c = Raw(port)
    c.open()
    c.starttls()
    der = c.sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest(), c


def reload(server, n):
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log().count("reload") < n:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)


def test_sighup_swaps_the_certificate_and_keeps_a_bad_config_out(xmppd_server_factory, tmp_path):
    certs = tmp_path / "tls"
    certs.mkdir()
    cert, key, first = write_cert(certs, "live")
    conf = tmp_path / "xmppd.toml"
    base = f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    conf.write_text(base)
    server = xmppd_server_factory("--config", conf)

    got, old_client = served_cert(server.port)
    assert got == first

    # the certificate files are replaced (as certbot does), then SIGHUP
    _, _, second = write_cert(certs, "next")
    os.replace(certs / "next.crt", cert)
    os.replace(certs / "next.key", key)
    assert second != first
    reload(server, 1)
    server.wait_for_log(r"reloaded configuration \(#1\)")
    got, new_client = served_cert(server.port)
    assert got == second
    # the connection made before the reload still works on its old TLS session
    assert old_client.auth("early", "pw").tag.endswith("success")

    # a certificate that does not match its key: rejected, the server keeps the last good one
    _, other_key, _ = write_cert(certs, "other")
    conf.write_text(f'tls_cert = "{cert}"\ntls_key = "{other_key}"\n')
    reload(server, 2)
    server.wait_for_log(r"reload rejected, keeping the running configuration: .*tls_key")
    # an unknown key: also rejected
    conf.write_text(base + "c2s_prot = 1\n")
    reload(server, 3)
    server.wait_for_log(r"reload rejected.*c2s_prot")
    assert served_cert(server.port)[0] == second
    assert server.returncode is None
    for c in (old_client, new_client):
        c.close()


def test_sighup_rebinds_the_listener_and_reports_fixed_keys(xmppd_server_factory, tmp_path):
    conf = tmp_path / "xmppd.toml"
    conf.write_text("max_connections_per_ip = 100\n")
    server = xmppd_server_factory("--config", conf)
    old_port = server.port
    # the --c2s-port 0 flag wins over the file, as at start-up: change it through a new file
    # key that flags do not override (metrics) and a restart-only key
    metrics = free_port()
    conf.write_text(f'domain = "example.org"\nmetrics_port = {metrics}\nlog_level = "warn"\n')
    reload(server, 1)
    server.wait_for_log(r"domain cannot change at runtime \(restart to apply\); kept")
    server.wait_for_log(rf"metrics listening on http://127\.0\.0\.1:{metrics}/metrics")
    server.wait_for_log(r"changed: log_level, metrics_port")
    # the domain was kept: logins for localhost still work
    c = Raw(old_port)
    c.login("stillhere")
    # a changed interface: the listener is bound anew (port 0 from the flag: a new free port)
    conf.write_text('interface = "::1"\n')
    reload(server, 3)
    m = server.wait_for_log(r"c2s listening on ::1:(\d+)")
    c6 = Raw(int(m.group(1)), host="::1")
    c6.login("overipv6")
    c6.close()
    with pytest.raises(OSError):
        Raw(old_port).close()
    # the session made before the rebind is still served
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert c.next().get("type") == "result"
    c.close()


def test_systemd_ready_and_watchdog_notifications(xmppd_server_factory, tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(path)
    sd.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")       # a ping every 0.2 s
    conf = tmp_path / "x.toml"
    conf.write_text("")
    server = xmppd_server_factory("--config", conf, wait=False)
    messages = []
    try:
        ready = sd.recv(4096).decode()
        messages.append(ready)
        # READY=1 comes only once clients can connect
        assert "READY=1" in ready and f"MAINPID={server.proc.pid}" in ready
        server.wait_listening()
        Raw(server.port).close()
        start = time.monotonic()
        pings = 0
        while pings < 5:
            msg = sd.recv(4096).decode()
            messages.append(msg)
            pings += msg == "WATCHDOG=1"
        assert time.monotonic() - start < 5
        # a reload is announced as RELOADING=1, then READY=1 again
        server.proc.send_signal(signal.SIGHUP)
        seen = []
        while "READY=1" not in "".join(seen):
            msg = sd.recv(4096).decode()
            if msg != "WATCHDOG=1":
                seen.append(msg)
        assert seen[0] == "RELOADING=1"
        server.stop()
        rest = []
        try:
            sd.settimeout(2)
            while True:
                rest.append(sd.recv(4096).decode())
        except socket.timeout:
            pass
        assert "STOPPING=1" in rest
    finally:
        sd.close()


def test_no_notify_socket_means_no_notifications(xmppd_server):
    """Outside systemd nothing is sent and nothing fails."""
    assert "systemd" not in xmppd_server.log()
