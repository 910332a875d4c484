"""Real logins with stored accounts (no --insecure-auth): every SASL mechanism with
slixmpp, -PLUS with tls-exporter/tls-server-end-point from a pyOpenSSL raw client,
xmpp.js (SCRAM-SHA-1 under node), go-sendxmpp (PLAIN over STARTTLS), and a database
from before SCRAM keys logging in and being upgraded."""
import asyncio
import base64
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import slixmpp
from OpenSSL import SSL

from conftest import REPO_ROOT, server_env
from scramclient import RawClient, ScramClient
from tools import require_command, require_node_module
from xmppd.storage import migrations
from xmppd.storage.accounts import hash_password
from xmppd.transports.tls import DEV_CERT

PASSWORD = "correct horse"


def adduser(data_dir, *names, password=PASSWORD):
    for name in names:
        subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data_dir), "adduser", name],
                       input=password + "\n", text=True, check=True, cwd=REPO_ROOT, env=server_env(),
                       capture_output=True)


@pytest.fixture
def real_server(xmppd_server_factory, tmp_path):
    data = tmp_path / "real"
    adduser(data, "alice", "bob")
    return xmppd_server_factory(insecure_auth=False, data_dir=data)


def slix(jid, password, cert, mech=None, tls12=False):
    c = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
    c.enable_direct_tls = False
    c.ca_certs = Path(cert)
    if tls12:
        # Python's ssl offers only tls-unique, which exists on TLS <= 1.2.
        import ssl
        c.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
    return c


async def login(c, port, timeout=10):
    ok = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda *_: ok.done() or ok.set_result(True))
    c.add_event_handler("failed_auth", lambda *_: ok.done() or ok.set_result(False))
    c.connect("127.0.0.1", port)
    result = await asyncio.wait_for(ok, timeout)
    return result


async def close(c):
    c.disconnect()
    await c.wait_until("disconnected", timeout=5)


@pytest.mark.parametrize("mech,tls12,logged", [
    ("SCRAM-SHA-256-PLUS", True, "SCRAM-SHA-256-PLUS tls-unique"),
    ("SCRAM-SHA-1-PLUS", True, "SCRAM-SHA-1-PLUS tls-unique"),
    ("SCRAM-SHA-256", False, "SCRAM-SHA-256"),
    ("SCRAM-SHA-1", False, "SCRAM-SHA-1"),
    ("PLAIN", False, "PLAIN"),
])
def test_slixmpp_logs_in_with_each_mechanism(real_server, mech, tls12, logged):
    cert = real_server.data_dir / DEV_CERT

    async def scenario():
        c = slix("alice@localhost/m", PASSWORD, cert, mech, tls12)
        assert await login(c, real_server.port)
        await close(c)
        bad = slix("alice@localhost/m", "wrong", cert, mech, tls12)
        assert not await login(bad, real_server.port)
        bad.disconnect()

    asyncio.run(scenario())
    real_server.wait_for_log(re.escape(f"authenticated as alice@localhost/m ({logged})"))


def test_slixmpp_picks_the_strongest_mechanism(real_server):
    cert = real_server.data_dir / DEV_CERT

    async def scenario():
        c = slix("bob@localhost/s", PASSWORD, cert, tls12=True)
        assert await login(c, real_server.port)
        await close(c)

    asyncio.run(scenario())
    real_server.wait_for_log(re.escape("authenticated as bob@localhost/s (SCRAM-SHA-256-PLUS tls-unique)"))


@pytest.mark.parametrize("hash_name", ["SHA-256", "SHA-1"])
@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
def test_plus_with_tls13_bindings_raw(real_server, hash_name, cb_type):
    c = RawClient(real_server.port)
    features = c.starttls()
    assert c.conn.get_protocol_version_name() == "TLSv1.3"
    mechs = re.findall(r"<mechanism>([^<]+)</mechanism>", features)
    assert mechs == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert re.findall(r"<channel-binding type='([^']+)'/>", features) == [
        "tls-exporter", "tls-server-end-point"]
    assert "urn:xmpp:sasl-cb:0" in features
    client = ScramClient(hash_name, "alice", PASSWORD, "rawnonce",
                         gs2_header=f"p={cb_type},,", cb_data=c.binding(cb_type))
    assert c.sasl(f"SCRAM-{hash_name}-PLUS", client) == ("success", True)
    c.close()


def test_channel_binding_attacks_fail(real_server):
    cases = [
        # a client that believes we cannot bind, although we offered -PLUS: downgrade
        ("SCRAM-SHA-256", dict(gs2_header="y,,"), "not-authorized"),
        # tls-unique is not offered on TLS 1.3
        ("SCRAM-SHA-256-PLUS", dict(gs2_header="p=tls-unique,,", cb_data=b"x" * 12), "not-authorized"),
        # binding data of another connection (e.g. a MITM's)
        ("SCRAM-SHA-256-PLUS", dict(gs2_header="p=tls-exporter,,", cb_data=b"\0" * 32), "not-authorized"),
        ("SCRAM-SHA-256-PLUS", dict(gs2_header="p=no-such-binding,,"), "not-authorized"),
        ("SCRAM-SHA-256-PLUS", dict(gs2_header="n,,"), "malformed-request"),
    ]
    for mech, kw, condition in cases:
        c = RawClient(real_server.port)
        c.starttls()
        client = ScramClient(mech.split("SCRAM-")[1].replace("-PLUS", ""), "alice", PASSWORD, "n1", **kw)
        assert c.sasl(mech, client) == ("failure", condition), kw
        c.close()
    # Over plain TCP -PLUS is not offered, "y" is then the honest answer.
    c = RawClient(real_server.port)
    features = c.header()
    assert "PLUS" not in features and "sasl-cb" not in features
    assert c.sasl("SCRAM-SHA-256", ScramClient("SHA-256", "alice", PASSWORD, "n2", gs2_header="y,,")) \
        == ("success", True)
    c.close()


def test_tls12_offers_tls_unique_and_it_works_raw(real_server):
    c = RawClient(real_server.port, max_tls=SSL.TLS1_2_VERSION)
    features = c.starttls()
    assert re.findall(r"<channel-binding type='([^']+)'/>", features) == [
        "tls-server-end-point", "tls-unique"]
    client = ScramClient("SHA-256", "alice", PASSWORD, "n3", gs2_header="p=tls-unique,,",
                         cb_data=c.binding("tls-unique"))
    assert c.sasl("SCRAM-SHA-256-PLUS", client) == ("success", True)
    c.close()


def test_xmppjs_scram_sha1_logs_in_and_sends_a_message(real_server):
    node = require_command("node", "install Node.js >= 20")
    require_node_module("@xmpp/client")
    cert = real_server.data_dir / DEV_CERT
    script = r"""
import { client, xml } from "@xmpp/client";
const [port, password] = process.argv.slice(1);   // with -e there is no script path
const xmpp = client({ service: `xmpp://127.0.0.1:${port}`, domain: "localhost",
                      username: "bob", password, resource: "js",
                      timeout: 20000 });   // xmpp.js waits 2 s per step by default: too short under load
xmpp.on("error", (err) => { console.error("ERROR", err.condition, err.message, err.stack); process.exit(2); });
xmpp.on("online", async (address) => {
  console.log("ONLINE", address.toString());
  await xmpp.send(xml("message", { to: "alice@localhost/py", type: "chat" }, xml("body", {}, "hi from xmpp.js")));
  setTimeout(() => xmpp.stop().then(() => process.exit(0)), 500);
});
xmpp.start().catch((e) => { console.error("START", e.message); process.exit(3); });
"""

    async def scenario():
        alice = slix("alice@localhost/py", PASSWORD, cert)
        got = asyncio.get_running_loop().create_future()
        alice.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        assert await login(alice, real_server.port)
        env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(cert))   # STARTTLS with the pinned dev cert
        proc = await asyncio.create_subprocess_exec(
            node, "--input-type=module", "-e", script, str(real_server.port), PASSWORD, env=env,
            cwd=REPO_ROOT / "tests" / "js",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, (out, err)
        assert b"ONLINE bob@localhost/js" in out
        m = await asyncio.wait_for(got, 5)
        assert m["body"] == "hi from xmpp.js" and m["from"].full == "bob@localhost/js"
        await close(alice)

    asyncio.run(scenario())
    real_server.wait_for_log(re.escape("authenticated as bob@localhost/js (SCRAM-SHA-1)"))


def test_go_sendxmpp_plain_over_starttls(real_server):
    gosend = require_command("go-sendxmpp", "`apt-get install go-sendxmpp`")
    cert = real_server.data_dir / DEV_CERT

    async def scenario():
        alice = slix("alice@localhost/py", PASSWORD, cert)
        got = asyncio.get_running_loop().create_future()
        alice.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        assert await login(alice, real_server.port)
        alice.send_presence()               # available: the bare-JID message is delivered, not stored
        await asyncio.sleep(0.3)
        proc = await asyncio.create_subprocess_exec(
            gosend, "-u", "bob@localhost", "-p", PASSWORD, "-j", f"127.0.0.1:{real_server.port}",
            "-n", "alice@localhost", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(b"hi from go-sendxmpp\n"), 30)
        assert proc.returncode == 0, (out, err)
        m = await asyncio.wait_for(got, 10)
        assert m["body"].strip() == "hi from go-sendxmpp"
        await close(alice)

    asyncio.run(scenario())
    assert re.search(r"authenticated as bob@localhost/\S+ \(PLAIN\)", real_server.log())


def make_pre_scram_database(data_dir):
    """A database as the release before SCRAM keys wrote it: every earlier step, scrypt hashes."""
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "xmppd.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    scram = next(v for v, desc, _ in migrations.MIGRATIONS if desc == "SCRAM credentials for accounts")
    for version, _, step in migrations.MIGRATIONS[:scram - 1]:
        step(conn)
        conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO accounts (username, password_hash, created) VALUES (?, ?, 0)",
                 ("olduser", hash_password(PASSWORD)))
    conn.close()


def test_old_database_logs_in_and_is_upgraded_to_scram(xmppd_server_factory, tmp_path):
    data = tmp_path / "old"
    make_pre_scram_database(data)
    server = xmppd_server_factory(insecure_auth=False, data_dir=data)
    cert = data / DEV_CERT

    async def scenario():
        # Until its first PLAIN login the account has no SCRAM keys.
        c = slix("olduser@localhost/a", PASSWORD, cert, "SCRAM-SHA-256")
        assert not await login(c, server.port)
        c.disconnect()
        c = slix("olduser@localhost/a", PASSWORD, cert, "PLAIN")
        assert await login(c, server.port)
        await close(c)
        c = slix("olduser@localhost/b", PASSWORD, cert, "SCRAM-SHA-256")
        assert await login(c, server.port)
        await close(c)
        c = slix("olduser@localhost/c", "wrong", cert, "PLAIN")
        assert not await login(c, server.port)
        c.disconnect()

    asyncio.run(scenario())
    server.wait_for_log(r"upgraded olduser from scrypt to SCRAM keys")
    server.wait_for_log(re.escape("authenticated as olduser@localhost/b (SCRAM-SHA-256)"))
    row = sqlite3.connect(data / "xmppd.sqlite3").execute(
        "SELECT password_hash, scram_iterations, length(sha256_stored_key) FROM accounts").fetchone()
    assert row == ("", 10000, 32)
    assert sqlite3.connect(data / "xmppd.sqlite3").execute("PRAGMA user_version").fetchone()[0] \
        == migrations.LATEST


def test_insecure_auth_creates_accounts_with_scram_keys(xmppd_server):
    cert = xmppd_server.data_dir / DEV_CERT

    async def scenario():
        c = slix("newcomer@localhost/x", "any password", cert)
        assert await login(c, xmppd_server.port)
        await close(c)

    asyncio.run(scenario())
    xmppd_server.wait_for_log(r"insecure-auth: created account newcomer")
    row = sqlite3.connect(xmppd_server.data_dir / "xmppd.sqlite3").execute(
        "SELECT password_hash, length(sha256_stored_key), length(sha1_server_key) FROM accounts "
        "WHERE username = 'newcomer'").fetchone()
    assert row == ("", 32, 20)
    assert re.search(r"authenticated as newcomer@localhost/x \(PLAIN\)", xmppd_server.log())


def test_a_client_that_only_knows_tls_unique_reaches_plain_without_lockout(xmppd_server_factory,
                                                                           tmp_path):
    """slixmpp <= 1.8 (poezio on Debian 12) on TLS 1.3: it tries each -PLUS with tls-unique (not
    defined for TLS 1.3, RFC 9266), then SCRAM with "y" (refused: RFC 5802 §6 downgrade), then
    PLAIN. None of those refusals is a password guess: the stream stays open for its five attempts
    (RFC 6120 §6.4.5) and the login throttle does not count them, so logging in again and again
    never locks the account or the address out."""
    data = tmp_path / "real"
    adduser(data, "alice")
    conf = tmp_path / "c.toml"
    conf.write_text("limits_exempt = []\nmax_auth_failures_per_ip = 3\n"
                    "max_auth_failures_per_account = 3\n")
    server = xmppd_server_factory("--config", conf, insecure_auth=False, data_dir=data)
    plain = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    for round_ in range(3):
        c = RawClient(server.port)
        c.starttls()
        for mech, header in (("SCRAM-SHA-256-PLUS", "p=tls-unique,,"),
                             ("SCRAM-SHA-1-PLUS", "p=tls-unique,,"),
                             ("SCRAM-SHA-256", "y,,"), ("SCRAM-SHA-1", "y,,")):
            client = ScramClient(mech.split("SCRAM-")[1].replace("-PLUS", ""), "alice", PASSWORD,
                                 f"r{round_}", gs2_header=header,
                                 cb_data=c.binding("tls-unique") if "PLUS" in mech else b"")
            assert c.sasl(mech, client) == ("failure", "not-authorized"), (round_, mech)
        c.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
        c.read_until(r"<success[^>]*/>")
        c.close()
    # guesses still count: three wrong passwords lock the account as before
    for i in range(3):
        c = RawClient(server.port)
        c.starttls()
        wrong = ScramClient("SHA-256", "alice", "wrong", f"w{i}")
        assert c.sasl("SCRAM-SHA-256", wrong) == ("failure", "not-authorized")
        c.close()
    c = RawClient(server.port)
    c.starttls()
    assert c.sasl("SCRAM-SHA-256", ScramClient("SHA-256", "alice", PASSWORD, "late")) == \
        ("failure", "temporary-auth-failure")
    c.close()
