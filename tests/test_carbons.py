"""XEP-0280 Message Carbons over real sockets: slixmpp's xep_0280 plugin with two
resources, and raw clients for the eligibility rules and hostile requests."""
import asyncio
import xml.etree.ElementTree as ET

from test_blocking import iq, login
from test_c2s_raw import C, stanza_error
from test_offline import messages, sync
from test_slixmpp_core import close, connect, make_client

NS = "urn:xmpp:carbons:2"
FWD = "{urn:xmpp:forward:0}forwarded"


def enable(c, what="enable"):
    el = iq(c, f"<{what} xmlns='{NS}'/>", what)
    assert el.get("type") == "result", ET.tostring(el)


def carbons(c, wait=0.4):
    """[(direction, inner message)] of the carbons that arrive within ``wait``."""
    out = []
    for m in messages(c, wait):
        for d in ("sent", "received"):
            w = m.find(f"{{{NS}}}{d}")
            if w is not None:
                assert m.get("from") == c.full.split("/")[0] and m.get("to") == c.full
                out.append((d, w.find(f"{FWD}/{C}message")))
    return out


def test_slixmpp_two_resources_see_each_others_conversation(xmppd_server):
    async def scenario():
        desk = make_client("alice@localhost/desk", "pw")
        phone = make_client("alice@localhost/phone", "pw")
        bob = make_client("bob@localhost/home", "pw")
        loop = asyncio.get_running_loop()
        sent, received = loop.create_future(), loop.create_future()
        phone.register_plugin("xep_0280")
        desk.register_plugin("xep_0280")
        phone.add_event_handler("carbon_sent", lambda m: sent.done() or sent.set_result(m))
        phone.add_event_handler("carbon_received", lambda m: received.done() or received.set_result(m))
        for c in (desk, phone, bob):
            await connect(c, xmppd_server.port)
            c.send_presence()
        info = await phone.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        assert NS in info["disco_info"]["features"]
        await phone.plugin["xep_0280"].enable(timeout=5)
        await desk.plugin["xep_0280"].enable(timeout=5)

        desk.send_message(mto="bob@localhost/home", mbody="hi bob", mtype="chat")
        m = await asyncio.wait_for(sent, 5)
        inner = m["carbon_sent"]
        assert inner["body"] == "hi bob" and inner["to"] == "bob@localhost/home"
        assert inner["from"] == "alice@localhost/desk" and m["from"] == "alice@localhost"

        bob.send_message(mto="alice@localhost/desk", mbody="hi desk", mtype="chat")
        m = await asyncio.wait_for(received, 5)
        inner = m["carbon_received"]
        assert inner["body"] == "hi desk" and inner["from"] == "bob@localhost/home"
        assert inner["to"] == "alice@localhost/desk"
        await close(desk, phone, bob)

    asyncio.run(scenario())


def test_eligibility_private_hints_disable_and_offline(xmppd_server):
    desk = login(xmppd_server, "carla", "desk")
    phone = login(xmppd_server, "carla", "phone")
    bob = login(xmppd_server, "bobby")
    enable(phone)
    enable(phone)                       # idempotent (§9.1)
    for i, extra in enumerate(("", f"<private xmlns='{NS}'/>", "<no-copy xmlns='urn:xmpp:hints'/>")):
        desk.send(f"<message to='bobby@localhost/r' type='chat' id='s{i}'><body>b</body>{extra}</message>")
    desk.send("<message to='bobby@localhost/r' id='n0'><subject>no body</subject></message>")
    desk.send("<message to='bobby@localhost/r' id='n1'><body>normal with body</body></message>")
    desk.send("<message to='bobby@localhost/r' type='chat' id='c0'>"
              "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    sync(desk)
    got = carbons(phone)
    assert [(d, m.get("id")) for d, m in got] == [("sent", "s0"), ("sent", "n1"), ("sent", "c0")]
    assert got[0][1].find(f"{C}body").text == "b"
    desk.nothing()                      # the sender never gets its own copy

    # Received: to the other resource's full JID, and to the bare JID (highest priority gets it).
    bob.send("<message to='carla@localhost/desk' type='chat' id='r0'><body>x</body></message>")
    bob.send("<message to='carla@localhost/desk' type='headline' id='h0'><body>x</body></message>")
    bob.send("<message to='carla@localhost/phone' type='chat' id='r1'><body>x</body></message>")
    sync(bob)
    got = carbons(phone)
    assert [(d, m.get("id")) for d, m in got] == [("received", "r0")]
    assert [m.get("id") for m in messages(desk, 0.2)] == ["r0", "h0"]   # no carbon of r1 there

    enable(phone, "disable")
    bob.send("<message to='carla@localhost/desk' type='chat' id='r2'><body>x</body></message>")
    sync(bob)
    assert carbons(phone) == []

    # Offline: only a negative-priority resource is online; the message is stored,
    # and that carbons-enabled resource gets a received copy (§6).
    desk.close()
    enable(phone)
    phone.send("<presence><priority>-1</priority></presence>")
    sync(phone)
    bob.send("<message to='carla@localhost' type='chat' id='off'><body>later</body></message>")
    sync(bob)
    got = carbons(phone)
    assert [(d, m.get("id")) for d, m in got] == [("received", "off")]


def test_muc_private_messages_are_not_copied(xmppd_server):
    desk = login(xmppd_server, "dora", "desk")
    phone = login(xmppd_server, "dora", "phone")
    enable(phone)
    eve = login(xmppd_server, "evelyn")
    room = "carbonroom@conference.localhost"
    for c, nick in ((desk, "dora"), (eve, "eve")):
        c.send(f"<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        sync(c)
    desk.send(f"<message to='{room}/eve' type='chat' id='pm1'><body>psst</body>"
              "<x xmlns='http://jabber.org/protocol/muc#user'/></message>")
    eve.send(f"<message to='{room}/dora' type='chat' id='pm2'><body>back</body>"
             "<x xmlns='http://jabber.org/protocol/muc#user'/></message>")
    sync(desk)
    sync(eve)
    assert carbons(phone, 0.6) == []


def test_hostile_requests(xmppd_server):
    mallory = login(xmppd_server, "mallory")
    victim = login(xmppd_server, "victim")
    el = iq(mallory, f"<enable xmlns='{NS}'/>", "x", to="victim@localhost")
    assert stanza_error(el) == ("cancel", "not-allowed")
    el = iq(mallory, f"<enable xmlns='{NS}'/>", "g", itype="get")
    assert stanza_error(el) == ("modify", "bad-request")
    el = iq(mallory, f"<frob xmlns='{NS}'/>", "f")
    assert stanza_error(el) == ("modify", "bad-request")
    # A carbon wrapper sent by a client is never itself copied again.
    enable(victim)
    v2 = login(xmppd_server, "victim", "two")
    v2.send(f"<message to='mallory@localhost/r' type='chat' id='w'><sent xmlns='{NS}'>"
            f"<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'>"
            f"<body>forged</body></message></forwarded></sent></message>")
    sync(v2)
    assert carbons(victim) == []
