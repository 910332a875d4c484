"""XEP-0191 Blocking Command over real sockets: slixmpp's xep_0191 plugin and raw clients.

A blocked user's message bounces and is not delivered, the user's own
messages to a blocked JID get ``not-acceptable`` + ``<blocked/>``, pushes
reach the resources that asked for the list, the list survives a restart
and is deleted with the account.
"""
import asyncio
import xml.etree.ElementTree as ET

import slixmpp

from test_c2s_raw import C, Raw, stanza_error
from test_ctl import ctl
from test_offline import messages, sync
from test_slixmpp_core import close, connect, make_client

NS = "urn:xmpp:blocking"
B = f"{{{NS}}}"


def login(server, user, resource="r", presence=True):
    c = Raw(server.port)
    c.login(user, "pw", resource=resource)
    if presence:
        c.send("<presence/>")
        sync(c)
    return c


def iq(c, body, iq_id, itype="set", to=None):
    t = f" to='{to}'" if to else ""
    c.send(f"<iq type='{itype}' id='{iq_id}'{t}>{body}</iq>")
    while True:
        el = c.next()
        if el.tag == f"{C}iq" and el.get("id") == iq_id:
            return el


def blocklist(c):
    el = iq(c, f"<blocklist xmlns='{NS}'/>", "get1", "get")
    assert el.get("type") == "result", ET.tostring(el)
    return sorted(i.get("jid") for i in el.find(f"{B}blocklist"))


def test_slixmpp_blocks_a_user_who_then_cannot_reach_it(xmppd_server):
    async def scenario():
        alice = make_client("alice@localhost/desk", "pw")
        bob = make_client("bob@localhost/phone", "pw")
        alice.register_plugin("xep_0191")
        alice_got, bob_got = [], []
        alice.add_event_handler("message", alice_got.append)
        bob_errors = asyncio.get_running_loop().create_future()
        bob.add_event_handler("message_error", lambda m: bob_errors.done() or bob_errors.set_result(m))
        bob.add_event_handler("message", bob_got.append)
        for c in (alice, bob):
            await connect(c, xmppd_server.port)
            c.send_presence()
        info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert NS in info["disco_info"]["features"]
        assert await alice.plugin["xep_0191"].get_blocked_jids(timeout=5) == set()
        await alice.plugin["xep_0191"].block(["bob@localhost"], timeout=5)
        assert await alice.plugin["xep_0191"].get_blocked_jids(timeout=5) == {slixmpp.JID("bob@localhost")}

        bob.send_message(mto="alice@localhost", mbody="let me in", mtype="chat")
        err = await asyncio.wait_for(bob_errors, 5)
        assert err["error"]["condition"] == "service-unavailable"
        # Alice's own message to Bob is refused with the blocked application error.
        alice_errors = asyncio.get_running_loop().create_future()
        alice.add_event_handler("message_error",
                                lambda m: alice_errors.done() or alice_errors.set_result(m))
        alice.send_message(mto="bob@localhost/phone", mbody="psst", mtype="chat")
        err = await asyncio.wait_for(alice_errors, 5)
        assert err["error"]["condition"] == "not-acceptable"
        assert err.xml.find(f"{C}error/{{urn:xmpp:blocking:errors}}blocked") is not None
        await asyncio.sleep(0.3)
        assert [m["body"] for m in alice_got if m["type"] != "error"] == []
        assert [m["body"] for m in bob_got if m["type"] != "error"] == []

        await alice.plugin["xep_0191"].unblock(["bob@localhost"], timeout=5)
        got = asyncio.get_running_loop().create_future()
        alice.add_event_handler("message", lambda m: m["type"] != "error" and not got.done()
                                and got.set_result(m))
        bob.send_message(mto="alice@localhost", mbody="hello again", mtype="chat")
        assert (await asyncio.wait_for(got, 5))["body"] == "hello again"
        await close(alice, bob)

    asyncio.run(scenario())


def test_presence_iq_and_domain_items_and_pushes(xmppd_server):
    alice = login(xmppd_server, "alice", "one")
    other = login(xmppd_server, "alice", "two")
    assert blocklist(other) == []          # resource two asked: it gets pushes
    bob = login(xmppd_server, "bob")
    # Bob had directed presence to alice/one; blocking him sends none and drops his.
    el = iq(alice, f"<block xmlns='{NS}'><item jid='localhost'/></block>", "b1")
    assert el.get("type") == "result" and el.get("to") == "alice@localhost/one"
    push = other.next()
    assert push.get("type") == "set" and push.find(f"{B}block/{B}item").get("jid") == "localhost"
    other.send(f"<iq type='result' id='{push.get('id')}'/>")
    alice.nothing()                          # one did not request the list: no push
    # The whole domain is blocked: bob's presence vanishes, his IQ and message bounce.
    bob.send("<presence to='alice@localhost/one'/>")
    bob.send("<iq type='get' id='p1' to='alice@localhost/one'><ping xmlns='urn:xmpp:ping'/></iq>")
    el = bob.next()
    assert el.get("id") == "p1" and stanza_error(el) == ("cancel", "service-unavailable")
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>x</body></message>")
    el = bob.next()
    assert el.get("id") == "m1" and stanza_error(el) == ("cancel", "service-unavailable")
    assert messages(alice, 0.3) == []
    alice.nothing()
    # The server itself still answers alice.
    el = iq(alice, "<ping xmlns='urn:xmpp:ping'/>", "ping", "get")
    assert el.get("type") == "result"

    # Unblock everything: push of an empty <unblock/>, then traffic flows again.
    el = iq(alice, f"<unblock xmlns='{NS}'/>", "u1")
    assert el.get("type") == "result"
    push = other.next()
    assert push.find(f"{B}unblock") is not None and len(push.find(f"{B}unblock")) == 0
    assert blocklist(alice) == []
    bob.send("<message to='alice@localhost/one' type='chat' id='m2'><body>y</body></message>")
    assert [m.get("id") for m in messages(alice)] == ["m2"]


def test_bad_requests_and_the_bound(xmppd_server_factory, tmp_path):
    cfg = tmp_path / "xmppd.toml"
    cfg.write_text("max_blocklist_items = 3\n")
    server = xmppd_server_factory("--config", cfg)
    c = login(server, "carol")
    for body, cond in ((f"<block xmlns='{NS}'/>", ("modify", "bad-request")),
                       (f"<block xmlns='{NS}'><item jid='@bad'/></block>", ("modify", "jid-malformed")),
                       (f"<block xmlns='{NS}'><item/></block>", ("modify", "jid-malformed")),
                       (f"<frobnicate xmlns='{NS}'/>", ("modify", "bad-request"))):
        assert stanza_error(iq(c, body, "bad")) == cond, body
    assert stanza_error(iq(c, f"<block xmlns='{NS}'/>", "g", "get")) == ("modify", "bad-request")
    ok = iq(c, f"<block xmlns='{NS}'><item jid='a@x.example'/><item jid='B@X.example'/>"
               f"<item jid='x.example/r'/></block>", "ok")
    assert ok.get("type") == "result"
    assert blocklist(c) == ["a@x.example", "b@x.example", "x.example/r"]   # normalised
    assert stanza_error(iq(c, f"<block xmlns='{NS}'><item jid='d@x.example'/></block>", "full")) \
        == ("wait", "resource-constraint")
    # Re-blocking what is listed does not count against the bound.
    assert iq(c, f"<block xmlns='{NS}'><item jid='a@x.example'/></block>", "again").get("type") == "result"
    # Someone else's blocklist is not reachable.
    dave = login(server, "dave")
    el = iq(dave, f"<blocklist xmlns='{NS}'/>", "spy", "get", to="carol@localhost")
    assert stanza_error(el) == ("cancel", "service-unavailable")
    el = iq(dave, f"<block xmlns='{NS}'><item jid='dave@localhost'/></block>", "spy2",
            to="carol@localhost")
    assert stanza_error(el) == ("cancel", "service-unavailable")
    assert blocklist(c) == ["a@x.example", "b@x.example", "x.example/r"]


def test_blocklist_survives_restart_and_goes_with_the_account(xmppd_server_factory, tmp_path):
    data = tmp_path / "persist"
    server = xmppd_server_factory(data_dir=data)
    c = login(server, "erin")
    assert iq(c, f"<block xmlns='{NS}'><item jid='mallory@localhost'/></block>", "b").get("type") \
        == "result"
    c.close()
    server.proc.kill()           # kill -9: what was acknowledged must be on disk
    server.proc.wait(5)
    server = xmppd_server_factory(data_dir=data)
    c = login(server, "erin")
    assert blocklist(c) == ["mallory@localhost"]
    m = login(server, "mallory")
    m.send("<message to='erin@localhost' type='chat' id='m'><body>x</body></message>")
    assert stanza_error(m.next()) == ("cancel", "service-unavailable")
    c.close()
    m.close()
    server.stop()
    assert ctl(data, "deluser", "erin").returncode == 0
    server = xmppd_server_factory(data_dir=data)
    c = login(server, "erin")         # a new account of the same name starts empty
    assert blocklist(c) == []
