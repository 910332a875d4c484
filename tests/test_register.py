"""In-band registration (XEP-0077) of accounts, password change and account removal,
and test accounts given up front (--user, [[accounts]])."""
import asyncio
import re
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO_ROOT, server_env
from test_auth_clients import PASSWORD, adduser, close, login, slix
from test_c2s_raw import C, NS_STREAMS, Raw, stanza_error
from xmppd.transports.tls import DEV_CERT

NS_REG = "jabber:iq:register"
FEATURE = "{http://jabber.org/features/iq-register}register"


def register_iq(c, body, ident="r1", type_="set"):
    c.send(f"<iq type='{type_}' id='{ident}'><query xmlns='{NS_REG}'>{body}</query></iq>")
    el = c.next()
    assert el.tag == f"{C}iq" and el.get("id") == ident, ET.tostring(el)
    return el


def fresh(port):
    c = Raw(port)
    c.open()
    return c, c.starttls()


@pytest.fixture
def reg_server(xmppd_server_factory, tmp_path):
    cfg = tmp_path / "reg.toml"
    cfg.write_text("allow_registration = true\nmax_registrations_per_ip = 2\nlimits_exempt = []\n"
                   "scram_iterations = 4096\n")
    return xmppd_server_factory("--config", cfg, insecure_auth=False, data_dir=tmp_path / "reg")


def test_register_then_log_in_with_scram(reg_server):
    c, features = fresh(reg_server.port)
    assert features.find(FEATURE) is not None
    form = register_iq(c, "", "g1", "get")
    q = form.find(f"{{{NS_REG}}}query")
    assert q.find(f"{{{NS_REG}}}username") is not None and q.find(f"{{{NS_REG}}}password") is not None
    ok = register_iq(c, f"<username>newbie</username><password>{PASSWORD}</password>")
    assert ok.get("type") == "result"
    again = register_iq(c, f"<username>NewBie</username><password>x</password>", "r2")
    assert stanza_error(again) == ("cancel", "conflict")
    c.close()
    reg_server.wait_for_log(r"register: created account newbie")

    async def scenario():
        s = slix("newbie@localhost/x", PASSWORD, reg_server.data_dir / DEV_CERT, "SCRAM-SHA-256")
        assert await login(s, reg_server.port)
        await close(s)

    asyncio.run(scenario())


def test_bad_registrations_and_the_per_ip_limit(reg_server):
    c, _ = fresh(reg_server.port)
    cases = [
        ("<username>a b@c</username><password>pw</password>", ("modify", "jid-malformed")),
        ("<username>nopass</username><password></password>", ("modify", "not-acceptable")),
        ("<username>nopass</username>", ("modify", "not-acceptable")),
        ("<password>pw</password>", ("modify", "not-acceptable")),
        ("<username>big</username><password>" + "x" * 2000 + "</password>", ("modify", "not-acceptable")),
        ("<remove/>", ("auth", "not-authorized")),
    ]
    for i, (body, expected) in enumerate(cases):
        assert stanza_error(register_iq(c, body, f"b{i}")) == expected, body
    assert register_iq(c, "<username>one</username><password>pw</password>", "ok1").get("type") == "result"
    assert register_iq(c, "<username>two</username><password>pw</password>", "ok2").get("type") == "result"
    third = register_iq(c, "<username>three</username><password>pw</password>", "ok3")
    assert stanza_error(third) == ("wait", "resource-constraint")
    c.close()


def test_registration_is_off_by_default(xmppd_server_factory, tmp_path):
    server = xmppd_server_factory(insecure_auth=False, data_dir=tmp_path / "off")
    c, features = fresh(server.port)
    assert features.find(FEATURE) is None
    c.send(f"<iq type='get' id='g'><query xmlns='{NS_REG}'/></iq>")
    assert c.stream_error() == "not-authorized"


def test_password_change_and_account_removal_with_slixmpp(xmppd_server_factory, tmp_path):
    data = tmp_path / "acc"
    adduser(data, "carol", "dave")
    server = xmppd_server_factory(insecure_auth=False, data_dir=data)
    cert = data / DEV_CERT

    async def scenario():
        carol = slix("carol@localhost/a", PASSWORD, cert)
        carol.register_plugin("xep_0077")
        assert await login(carol, server.port)
        info = await carol.plugin["xep_0077"].get_registration(timeout=10)
        assert info["register"]["registered"]
        await carol.plugin["xep_0077"].change_password("new secret", timeout=10)
        await close(carol)
        assert not await login(slix("carol@localhost/b", PASSWORD, cert), server.port)
        carol = slix("carol@localhost/c", "new secret", cert, "SCRAM-SHA-1")
        carol.register_plugin("xep_0077")
        assert await login(carol, server.port)
        # someone else's password cannot be changed
        iq = carol.make_iq_set(ito=None)
        iq["register"]["username"] = "dave"
        iq["register"]["password"] = "stolen"
        with pytest.raises(Exception) as e:
            await iq.send(timeout=10)
        assert "not-allowed" in str(e.value.iq if hasattr(e.value, "iq") else e.value)
        # an offline message for carol, then carol removes her account
        dave = slix("dave@localhost/d", PASSWORD, cert)
        assert await login(dave, server.port)
        await close(carol)
        dave.send_message(mto="carol@localhost", mbody="while you were out", mtype="chat")
        await asyncio.sleep(0.5)
        carol = slix("carol@localhost/e", "new secret", cert)
        carol.register_plugin("xep_0077")
        ended = asyncio.get_running_loop().create_future()
        carol.add_event_handler("disconnected", lambda *_: ended.done() or ended.set_result(True))
        assert await login(carol, server.port)
        await carol.plugin["xep_0077"].cancel_registration(timeout=10)
        assert await asyncio.wait_for(ended, 10)
        assert not await login(slix("carol@localhost/f", "new secret", cert), server.port)
        await close(dave)

    asyncio.run(scenario())
    server.wait_for_log(r"register: carol changed the password")
    server.wait_for_log(r"register: carol removed the account")
    db = sqlite3.connect(data / "xmppd.sqlite3")
    assert db.execute("SELECT count(*) FROM accounts WHERE username = 'carol'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM offline_messages WHERE username = 'carol'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM accounts WHERE username = 'dave'").fetchone() == (1,)


def test_test_accounts_from_flags_and_config_are_idempotent(xmppd_server_factory, tmp_path):
    data = tmp_path / "dev"
    cfg = tmp_path / "dev.toml"
    cfg.write_text("[[accounts]]\nname = 'erin'\npassword = 'erin pw'\n")
    args = ("--config", cfg, "--user", "frank:frank pw", "--user", "Grace@localhost:a:b")
    server = xmppd_server_factory(*args, insecure_auth=False, data_dir=data)
    assert len(re.findall(r"created test account", server.log())) == 3

    async def scenario(port, users):
        for user, pw in users:
            c = slix(f"{user}@localhost/t", pw, data / DEV_CERT, "SCRAM-SHA-256")
            assert await login(c, port), user
            await close(c)

    asyncio.run(scenario(server.port, [("erin", "erin pw"), ("frank", "frank pw"), ("grace", "a:b")]))
    server.stop()
    server = xmppd_server_factory("--config", cfg, "--user", "frank:changed", "--user", "grace:a:b",
                                  insecure_auth=False, data_dir=data)
    log = server.log()
    assert "created test account" not in log
    assert len(re.findall(r"reset the password of test account", log)) == 1
    asyncio.run(scenario(server.port, [("frank", "changed"), ("grace", "a:b")]))


def test_bad_test_account_flag_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "twisted", "xmppd", "--data-dir", str(tmp_path),
                           "--user", "nopassword"], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=server_env(), timeout=60)
    assert proc.returncode == 78 and "accounts" in proc.stderr and "Traceback" not in proc.stderr
