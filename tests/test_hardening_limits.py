"""Per-IP, per-account and per-session limits, and authentication abuse,
over real sockets against real (non-dev) accounts where passwords matter.

Each test ends by proving a second client still gets service.
"""
import base64
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO_ROOT, server_env
from test_c2s_raw import NS_SASL, Raw, start_server
from test_hardening import alive, ping

PASSWORD = "correct horse battery"


def _failure(el):
    assert el.tag == f"{{{NS_SASL}}}failure", ET.tostring(el)
    return [c.tag.split("}")[1] for c in el if not c.tag.endswith("}text")][0]


def add_user(data_dir, user, password=PASSWORD):
    subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data_dir), "adduser", user],
                   input=password + "\n", text=True, check=True, cwd=REPO_ROOT, env=server_env(),
                   capture_output=True)


def real_server(tmp_path_factory, config="", users=(), *args):
    """A server with real password checks and the given accounts (password PASSWORD)."""
    data_dir = tmp_path_factory.mktemp("real")
    for u in users:
        add_user(data_dir, u)
    cfg = data_dir / "xmppd.toml"
    cfg.write_text(config)
    from conftest import XmppdServer
    srv = XmppdServer(["--c2s-port", "0", "--data-dir", str(data_dir), "--config", str(cfg), *args],
                      data_dir)
    return srv.wait_listening()


def attempt(port, user, password, tls=True):
    """One login attempt on a fresh connection: (condition or 'success', seconds, client)."""
    c = Raw(port, timeout=15)
    c.open()
    if tls:
        c.starttls()
    t0 = time.monotonic()
    el = c.auth(user, password)
    took = time.monotonic() - t0
    if el.tag == f"{{{NS_SASL}}}success":
        return "success", took, c
    return _failure(el), took, c


def real_alive(server, user):
    c = Raw(server.port)
    try:
        c.login(user, password=PASSWORD, resource=f"alive{time.monotonic_ns()}")
        assert ping(c).get("type") == "result"
    finally:
        c.close()


# -- connections per IP -----------------------------------------------------------------

@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth", config=(
        "max_connections_per_ip = 5\nlimits_exempt = []\nmax_resources_per_account = 3\n"
        "read_rate_limit = 4096\n"))
    yield srv
    srv.stop()


def test_connections_per_ip_are_limited_and_released(limited):
    held = [Raw(limited.port) for _ in range(5)]
    try:
        for c in held:
            c.open()
        extra = Raw(limited.port)
        assert extra.stream_error() == "policy-violation"
        extra.close()
        # closing one frees a slot: a new client logs in and is served
        held.pop().close()
        time.sleep(0.3)
        alive(limited)
    finally:
        for c in held:
            c.close()
    time.sleep(0.3)
    # all released: five at once are fine again
    again = [Raw(limited.port) for _ in range(5)]
    try:
        for c in again:
            assert c.open().tag.endswith("features")
    finally:
        for c in again:
            c.close()


def test_loopback_is_exempt_by_default(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth", config="max_connections_per_ip = 2\n")
    held = [Raw(srv.port) for _ in range(4)]
    try:
        for c in held:
            assert c.open().tag.endswith("features")
    finally:
        for c in held:
            c.close()
        srv.stop()


# -- resources per account ----------------------------------------------------------------

def test_max_resources_per_account(limited):
    held = []
    try:
        for i in range(3):
            c = Raw(limited.port)
            held.append(c)
            c.login("many", resource=f"r{i}")
        c = Raw(limited.port)
        held.append(c)
        c.open(); c.starttls(); c.auth("many", "x"); c.open()
        el = c.bind("r3")
        assert el.get("type") == "error"
        err = el.find("{jabber:client}error")
        assert err.find("{urn:ietf:params:xml:ns:xmpp-stanzas}resource-constraint") is not None
        # rebinding an existing resource replaces it instead (not a new resource)
        el = c.bind("r0")
        assert el.get("type") == "result", ET.tostring(el)
        assert held[0].stream_error() == "conflict"
        assert ping(held[1]).get("type") == "result"
    finally:
        for c in held:
            c.close()


# -- read rate: slowed down, never dropped ------------------------------------------------------

def test_read_rate_slows_a_flooding_client_down_without_dropping(limited):
    c = Raw(limited.port, timeout=30)
    other = None
    try:
        c.login("flood")
        n = 330                                  # ~24 KiB of pings at 4 KiB/s, 8 KiB burst
        data = "".join(f"<iq type='get' id='f{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
                       for i in range(n))
        assert len(data) > 20000
        t0 = time.monotonic()
        c.send(data)
        # meanwhile another client is served
        other = Raw(limited.port)
        other.login("bystander")
        assert ping(other).get("type") == "result"
        seen = set()
        while len(seen) < n:
            el = c.next()
            assert el.get("type") == "result", ET.tostring(el)
            seen.add(el.get("id"))
        took = time.monotonic() - t0
        assert seen == {f"f{i}" for i in range(n)}      # nothing dropped
        assert took >= 2.5, f"{len(data)} bytes at 4096 B/s (8 KiB burst) took only {took:.2f}s"
        assert ping(c).get("type") == "result"           # still connected
    finally:
        c.close()
        if other:
            other.close()


# -- authentication ------------------------------------------------------------------------------

def raw_from(port, source):
    """A Raw client whose connection comes from another loopback address."""
    c = Raw.__new__(Raw)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
    c.timeout = 15
    c.eof = False
    c.full = None
    c._reset()
    return c


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """Three failures per account in a 10 s window; per-IP throttling out of the way."""
    srv = real_server(tmp_path_factory, "max_auth_failures_per_account = 3\n"
                      "max_auth_failures_per_ip = 1000\nauth_failure_window = 10\nlimits_exempt = []\n",
                      users=("victim", "victim2", "bystander"))
    yield srv
    srv.stop()


def test_failed_logins_slow_down_then_refuse_temporarily(auth_server):
    port = auth_server.port
    t0 = time.monotonic()
    results = []
    for _ in range(3):
        cond, took, c = attempt(port, "victim", "wrong")
        c.close()
        results.append((cond, took))
    assert [r[0] for r in results] == ["not-authorized"] * 3
    # answers get slower as the account nears its limit (2 s at the limit)
    assert results[2][1] >= 1.5, results
    # at the limit: refused before any password check, even with the right password
    cond, took, c = attempt(port, "victim", PASSWORD)
    c.close()
    assert cond == "temporary-auth-failure"
    # other accounts are unaffected
    real_alive(auth_server, "bystander")
    # once the window has passed the right password works again
    time.sleep(max(0.0, 10.3 - (time.monotonic() - t0)))
    cond, _, c = attempt(port, "victim", PASSWORD)
    c.close()
    assert cond == "success"


def test_unknown_and_existing_accounts_fail_identically(tmp_path_factory):
    """No account enumeration: same condition, same bytes, same throttling."""
    srv = real_server(tmp_path_factory, "max_auth_failures_per_account = 3\n"
                      "max_auth_failures_per_ip = 1000\nauth_failure_window = 60\nlimits_exempt = []\n",
                      users=("victim2", "bystander"))
    try:
        _enumeration(srv)
    finally:
        srv.stop()


def _enumeration(auth_server):
    port = auth_server.port
    outcomes = {}
    for user in ("victim2", "nosuchuser"):
        seq = []
        for _ in range(3):
            cond, _, c = attempt(port, user, "wrong")
            seq.append((cond, c.raw[c.raw.rfind(b"<failure"):]))
            c.close()
        outcomes[user] = seq
    for user in ("victim2", "nosuchuser"):     # both accounts are now at their limit
        cond, _, c = attempt(port, user, PASSWORD if user == "victim2" else "wrong")
        outcomes[user].append((cond, c.raw[c.raw.rfind(b"<failure"):]))
        c.close()
    assert outcomes["victim2"] == outcomes["nosuchuser"], outcomes
    assert [s[0] for s in outcomes["victim2"]] == ["not-authorized"] * 3 + ["temporary-auth-failure"]
    real_alive(auth_server, "bystander")


def test_failed_logins_per_ip_are_limited(tmp_path_factory):
    """Spraying many accounts from one address: that address is refused, others are not."""
    srv = real_server(tmp_path_factory, "max_auth_failures_per_account = 1000\n"
                      "max_auth_failures_per_ip = 5\nauth_failure_window = 60\nlimits_exempt = []\n",
                      users=("iptest",))
    try:
        conds = []
        for i in range(6):
            cond, _, c = attempt(srv.port, f"spray{i}", "wrong")
            c.close()
            conds.append(cond)
        assert conds == ["not-authorized"] * 5 + ["temporary-auth-failure"], conds
        # the right password of a real account is refused from this address for now
        cond, _, c = attempt(srv.port, "iptest", PASSWORD)
        c.close()
        assert cond == "temporary-auth-failure"
        # ... but the same account logs in from another address
        c = raw_from(srv.port, "127.0.0.2")
        try:
            c.login("iptest", password=PASSWORD)
            assert ping(c).get("type") == "result"
        finally:
            c.close()
    finally:
        srv.stop()


def test_plain_refused_without_tls_when_encryption_required(tmp_path_factory):
    srv = real_server(tmp_path_factory, "", ("tlsuser",), "--require-encryption", "true")
    try:
        c = Raw(srv.port)
        feats = c.open()
        assert feats.find(f"{{{NS_SASL}}}mechanisms") is None
        assert _failure(c.auth("tlsuser", PASSWORD)) == "encryption-required"
        assert b"<success" not in c.raw
        c.close()
        real_alive(srv, "tlsuser")
    finally:
        srv.stop()


def test_credentials_never_logged_even_with_trace(tmp_path_factory):
    srv = real_server(tmp_path_factory, "", ("tracy",), "--trace")
    try:
        secret_ok, secret_bad = PASSWORD, "Wr0ng-Hunter2-Secret"
        cond, _, c = attempt(srv.port, "tracy", secret_bad)
        assert cond == "not-authorized"
        c.close()
        # challenge/response form too
        c = Raw(srv.port)
        c.open(); c.starttls()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'/>")
        c.next()
        blob = base64.b64encode(f"\0tracy\0{secret_ok}".encode()).decode()
        c.send(f"<response xmlns='{NS_SASL}'>{blob}</response>")
        assert c.next().tag == f"{{{NS_SASL}}}success"
        c.open(); c.bind("t")
        assert ping(c).get("type") == "result"
        c.close()
        srv.wait_for_log(r"connection closed \(tracy@localhost/t\)")
        log = srv.log()
        for secret in (secret_ok, secret_bad, "Hunter2"):
            assert secret not in log
            for s in (f"\0tracy\0{secret}",):
                assert base64.b64encode(s.encode()).decode() not in log
        assert "tracy@localhost/t IN <iq" in log      # tracing was on
    finally:
        srv.stop()


def test_passwords_in_stanzas_are_redacted_in_the_trace(tmp_path_factory):
    """--trace never shows a password: legacy auth, in-band registration, room secrets."""
    from test_hardening import NS_MUC_OWNER, create_instant_room, expect, iq
    srv = start_server(tmp_path_factory, "--insecure-auth", "--trace")
    try:
        pre = Raw(srv.port)
        pre.open()
        pre.send("<iq type='set' id='legacy'><query xmlns='jabber:iq:auth'><username>u</username>"
                 "<password>LegacySecret1</password><resource>r</resource></query></iq>")
        pre.stream_error()
        pre.close()
        c = Raw(srv.port)
        c.login("owner", resource="t")
        c.send("<iq type='set' id='reg' to='localhost'><query xmlns='jabber:iq:register'>"
               "<username>owner</username><password>RegisterSecret2</password></query></iq>")
        expect(c, lambda e: e.get("id") == "reg")
        room = "secret@conference.localhost"
        create_instant_room(c, room, "O")
        r = iq(c, f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
                  "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                  "<field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>"
                  "<field var='muc#roomconfig_roomsecret'><value>RoomSecret3</value></field>"
                  "</x></query>", room, "set")
        assert r.get("type") == "result"
        r = iq(c, f"<query xmlns='{NS_MUC_OWNER}'/>", room)        # the form echoes the secret
        assert b"RoomSecret3" in c.raw
        d = Raw(srv.port)
        d.login("guest", resource="t")
        d.send(f"<presence to='{room}/G'><x xmlns='http://jabber.org/protocol/muc'>"
               "<password>RoomSecret3</password></x></presence>")
        expect(d, lambda e: e.get("from") == f"{room}/G")
        c.close()
        d.close()
        srv.wait_for_log(r"connection closed \(guest@localhost/t\)")
        log = srv.log()
        assert "owner@localhost/t IN <iq" in log                   # tracing was on
        for secret in ("LegacySecret1", "RegisterSecret2", "RoomSecret3"):
            assert secret not in log, log[log.index(secret) - 300:][:600]
    finally:
        srv.stop()


def test_unknown_user_costs_a_full_password_check(tmp_path_factory):
    """Timing must not tell unknown accounts apart: both paths run the password hash.

    Only a lower bound is checked (a loaded machine makes things slower, never
    faster): if unknown users skipped the hash they would answer in a fraction
    of the time a wrong password takes.
    """
    srv = real_server(tmp_path_factory, "auth_failure_window = 0\n", ("timed",))
    try:
        def median(user):
            times = []
            for _ in range(5):
                cond, took, c = attempt(srv.port, user, "wrong")
                c.close()
                assert cond == "not-authorized"
                times.append(took)
            return sorted(times)[2]
        median("warmup")
        known, unknown = median("timed"), median("nobody-here")
        assert unknown >= 0.3 * known, (known, unknown)
    finally:
        srv.stop()


def test_per_ip_limits_count_ipv6_by_64_prefix():
    """An IPv6 host owns a /64: its addresses share one per-IP budget."""
    from xmppd.auth.throttle import AuthThrottle, ip_key
    from xmppd.transports.limits import ConnectionsPerIP
    assert ip_key("192.0.2.7") == "192.0.2.7"
    assert ip_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert ip_key("2001:db8:1:2::1") == ip_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    conns = ConnectionsPerIP(2)
    assert conns.acquire("2001:db8::1") and conns.acquire("2001:db8::2")
    assert not conns.acquire("2001:db8::3")
    assert conns.acquire("2001:db8:0:1::1")          # the next /64 is someone else
    conns.release("2001:db8::2")
    assert conns.acquire("2001:db8::4")
    throttle = AuthThrottle(per_account=100, per_ip=2, window=60, clock=lambda: 1000.0)
    throttle.failed("2001:db8::1", "a")
    throttle.failed("2001:db8::2", "b")
    assert throttle.refused("2001:db8::3", "c")
    assert not throttle.refused("2001:db8:0:1::3", "c")


def test_redaction_handles_self_closing_tags():
    """Self-closing tags never open a match (the cost stays linear) and secrets after them go."""
    from xmppd.wire.redact import redact
    text = ("<message>" + "<password/>" * 50 + "<field var='x#roomsecret'/>"
            "<password xmlns='urn:a/b'>Hunter2</password>"
            "<field type='text-private' var='muc#roomconfig_roomsecret'><value>S3</value></field>"
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth></message>")
    out = redact(text)
    assert "Hunter2" not in out and "S3" not in out and "AGEAYg" not in out
    assert out.count("<password/>") == 50 and out.count("[redacted]") == 3


def test_client_that_stops_reading_is_closed_before_memory_fills(tmp_path_factory):
    """A stalled reader in a busy room: its unsent backlog is capped, the room goes on."""
    import threading
    from test_hardening import create_instant_room, expect, join, login
    srv = start_server(tmp_path_factory, "--insecure-auth", config="max_send_buffer = 1048576\n")
    room = "busy@conference.localhost"
    try:
        talker = login(srv.port, "talker", "r")
        create_instant_room(talker, room, "T")
        sloth = Raw(srv.port)
        sloth.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sloth.login("sloth", resource="r")
        join(sloth, room, "Sloth")
        expect(talker, lambda e: e.get("from") == f"{room}/Sloth")
        # the talker reads everything in the background; the sloth reads nothing
        seen = []
        stop = threading.Event()

        def drain():
            talker.sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    data = talker.sock.recv(1 << 20)
                except (socket.timeout, TimeoutError):
                    continue
                except OSError:
                    return
                if not data:
                    return
                seen.append(data)
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        body = "z" * 2000
        chunk = "".join(f"<message to='{room}' type='groupchat'><body>{body}</body></message>"
                        for _ in range(50)).encode()
        for _ in range(200):                 # ~21 MB through the room
            talker.sock.sendall(chunk)
        srv.wait_for_log(r"over max_send_buffer \(1048576\): the client does not read; "
                         r"closing \(sloth@localhost/r\)", timeout=20)
        # the sloth left the room (asked by another session of the owner, which
        # is not in the room and so not behind the flood)
        from test_hardening import NS_MUC_ADMIN, iq
        owner2 = login(srv.port, "talker", "second")

        def occupants():
            r = iq(owner2, f"<query xmlns='{NS_MUC_ADMIN}'><item role='participant'/></query>", room)
            return {i.get("nick") for i in r.iter(f"{{{NS_MUC_ADMIN}}}item")}
        deadline = time.monotonic() + 30
        while "Sloth" in occupants() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Sloth" not in occupants()
        owner2.close()
        stop.set()
        t.join(2)
        sloth.close()
        talker.close()
        alive(srv)
    finally:
        srv.stop()
