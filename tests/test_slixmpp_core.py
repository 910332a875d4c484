"""A real client library (slixmpp) against the server: STARTTLS with the pinned
dev certificate, SASL PLAIN, messages and pings between two accounts."""
import asyncio
import ssl
from pathlib import Path

import pytest
import slixmpp

from xmppd.transports.tls import DEV_CERT


def make_client(jid, password, cert=None):
    c = slixmpp.ClientXMPP(jid, password)
    c.enable_direct_tls = False          # we offer STARTTLS only
    if cert:
        c.ca_certs = Path(cert)          # pin the generated dev certificate (SAN localhost)
    else:
        c.ssl_context.check_hostname = False
        c.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ("xep_0030", "xep_0199", "xep_0092"):
        c.register_plugin(p)
    return c


async def connect(c, port):
    c.connect("127.0.0.1", port)
    await c.wait_until("session_start", timeout=10)


async def close(*clients):
    for c in clients:
        c.disconnect()
        await c.wait_until("disconnected", timeout=5)


def test_login_message_and_ping_between_two_accounts(xmppd_server):
    cert = xmppd_server.data_dir / DEV_CERT

    async def scenario():
        alice = make_client("alice@localhost/desk", "secret", cert)
        bob = make_client("bob@localhost/phone", "secret", cert)
        got = asyncio.get_running_loop().create_future()
        bob.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        for c in (alice, bob):
            await connect(c, xmppd_server.port)
            c.send_presence()
        assert alice.is_connected() and alice.boundjid.full == "alice@localhost/desk"
        alice.send_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
        m = await asyncio.wait_for(got, 5)
        assert m["body"] == "hello bob" and m["from"].full == "alice@localhost/desk"
        assert await alice.plugin["xep_0199"].ping(jid="localhost", timeout=5) >= 0
        assert await alice.plugin["xep_0199"].ping(jid=bob.boundjid, timeout=5) >= 0
        info = await bob.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert "urn:xmpp:ping" in info["disco_info"]["features"]
        version = await bob.plugin["xep_0092"].get_version("localhost", timeout=5)
        assert version["software_version"]["name"] == "xmppd"
        roster = await alice.get_roster(timeout=5)
        assert not roster["roster"]["items"]
        await close(alice, bob)

    asyncio.run(scenario())


def test_wrong_password_is_refused_with_real_accounts(xmppd_server_factory, tmp_path):
    import subprocess
    import sys
    from conftest import REPO_ROOT, server_env
    data = tmp_path / "real"
    subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data), "adduser", "carol"],
                   input="correct horse\n", text=True, check=True, cwd=REPO_ROOT, env=server_env())
    server = xmppd_server_factory(insecure_auth=False, data_dir=data)

    async def scenario():
        bad = make_client("carol@localhost/x", "wrong")
        failed = asyncio.get_running_loop().create_future()
        bad.add_event_handler("failed_auth", lambda *_: failed.done() or failed.set_result(True))
        bad.connect("127.0.0.1", server.port)
        assert await asyncio.wait_for(failed, 10)
        bad.disconnect()
        good = make_client("carol@localhost/x", "correct horse")
        await connect(good, server.port)
        assert good.boundjid.full == "carol@localhost/x"
        await close(good)

    asyncio.run(scenario())
