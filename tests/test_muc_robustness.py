"""Hostile and malformed MUC requests: every IQ gets an answer, nothing crashes the room.

Black-box over a real c2s connection: each request below is sent to a live room; every IQ
get/set must be answered (result or a stanza error), and the room must still work afterwards.
"""
import asyncio
import xml.etree.ElementTree as ET

import pytest

from xmppd.testing.client import Client

ROOM = "lab@conference.localhost"
ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"
REG = "jabber:iq:register"
XDATA = "jabber:x:data"


def iq(id_, typ, payload, to=ROOM):
    return f"<iq xmlns='jabber:client' id='{id_}' type='{typ}' to='{to}'>{payload}</iq>"


# (stanza, expected: 'result' | 'error' | None for "any answer")
BAD_IQS = [
    iq("a1", "set", f"<query xmlns='{ADMIN}'/>"),
    iq("a2", "set", f"<query xmlns='{ADMIN}'><item/></query>"),
    iq("a3", "set", f"<query xmlns='{ADMIN}'><item affiliation='member' jid='@@@'/></query>"),
    iq("a4", "set", f"<query xmlns='{ADMIN}'><item affiliation='member' jid=''/></query>"),
    iq("a5", "set", f"<query xmlns='{ADMIN}'><item affiliation='member' jid='a..b'/></query>"),
    iq("a6", "set", f"<query xmlns='{ADMIN}'><item role='none' nick=''/></query>"),
    iq("a7", "set", f"<query xmlns='{ADMIN}'><item role='none' nick='nobody'/></query>"),
    iq("a8", "set", f"<query xmlns='{ADMIN}'><item role='sovereign' nick='Owner'/></query>"),
    iq("a9", "set", f"<query xmlns='{ADMIN}'><item affiliation='owner' role='moderator' "
                    f"jid='x@localhost'/></query>"),
    iq("a10", "get", f"<query xmlns='{ADMIN}'/>"),
    iq("a11", "get", f"<query xmlns='{ADMIN}'><item affiliation='emperor'/></query>"),
    iq("a12", "get", f"<query xmlns='{ADMIN}'><item role='none'/></query>"),
    iq("a13", "set", f"<query xmlns='{ADMIN}'><item affiliation='member' "
                     f"jid='{'x' * 2000}@localhost'/></query>"),
    iq("o1", "set", f"<query xmlns='{OWNER}'/>"),
    iq("o2", "set", f"<query xmlns='{OWNER}'><x xmlns='{XDATA}'/></query>"),
    iq("o3", "set", f"<query xmlns='{OWNER}'><x xmlns='{XDATA}' type='submit'><field var='FORM_TYPE'>"
                    f"<value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                    f"<field var='muc#roomconfig_membersonly'><value>perhaps</value></field></x></query>"),
    iq("o4", "set", f"<query xmlns='{OWNER}'><x xmlns='{XDATA}' type='submit'><field var='FORM_TYPE'>"
                    f"<value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                    f"<field var='muc#roomconfig_membersonly'><value>1</value><value>0</value></field>"
                    f"</x></query>"),
    iq("o5", "set", f"<query xmlns='{OWNER}'><x xmlns='{XDATA}' type='submit'><field>"
                    f"<value>x</value></field></x></query>"),
    iq("o6", "set", f"<query xmlns='{OWNER}'><destroy jid='not a jid@@'/></query>"),
    iq("o7", "set", f"<query xmlns='{OWNER}'><unknown/></query>"),
    iq("r1", "set", f"<query xmlns='{REG}'/>"),
    iq("r2", "set", f"<query xmlns='{REG}'><x xmlns='{XDATA}' type='submit'/></query>"),
    iq("r3", "set", f"<query xmlns='{REG}'><x xmlns='{XDATA}' type='submit'><field var='FORM_TYPE'>"
                    f"<value>http://jabber.org/protocol/muc#register</value></field>"
                    f"<field var='muc#register_roomnick'><value> </value></field></x></query>"),
    iq("d1", "get", "<query xmlns='http://jabber.org/protocol/disco#info' node='nonsense'/>"),
    iq("d2", "get", "<query xmlns='http://jabber.org/protocol/disco#items' node='nonsense'/>"),
    iq("u1", "get", "<query xmlns='urn:example:unknown'/>"),
    iq("u2", "set", ""),
    iq("p1", "get", "<ping xmlns='urn:xmpp:ping'/>", to=ROOM + "/Nobody"),
    iq("p2", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to="nope@conference.localhost"),
    iq("p3", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to="conference.localhost/x"),
]

OTHER = [
    f"<presence xmlns='jabber:client' to='{ROOM}/Owner' type='bogus'/>",
    f"<presence xmlns='jabber:client' to='{ROOM}/ '><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    f"<message xmlns='jabber:client' to='{ROOM}' type='groupchat'/>",
    f"<message xmlns='jabber:client' to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'>"
    f"<invite/></x></message>",
    f"<message xmlns='jabber:client' to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'>"
    f"<invite to='@@'/></x></message>",
    f"<message xmlns='jabber:client' to='{ROOM}'><x xmlns='jabber:x:data' type='submit'/></message>",
    f"<message xmlns='jabber:client' to='{ROOM}/Nobody' type='chat'><body>x</body></message>",
]


async def _answer(client, id_, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        el = await client.next_stanza(max(left, 0.01))
        if el is None:
            pytest.fail(f"IQ {id_} was not answered")
        if el.tag == "{jabber:client}iq" and el.get("id") == id_:
            return el


async def scenario(port):
    owner = Client("Owner", "user@localhost", "password", "127.0.0.1", port)
    await owner.connect()
    owner.send(ET.fromstring(f"<presence xmlns='jabber:client' to='{ROOM}/Owner'>"
                             f"<x xmlns='http://jabber.org/protocol/muc'/></presence>"))
    owner.send(ET.fromstring(iq("inst", "set", f"<query xmlns='{OWNER}'><x xmlns='{XDATA}' "
                                               f"type='submit'/></query>")))
    assert (await _answer(owner, "inst")).get("type") == "result"
    for text in BAD_IQS:
        el = ET.fromstring(text)
        owner.send(el)
        answer = await _answer(owner, el.get("id"))
        assert answer.get("type") in ("result", "error"), text
    for text in OTHER:
        owner.send(ET.fromstring(text))
    # the room still works
    owner.send(ET.fromstring(f"<message xmlns='jabber:client' to='{ROOM}' type='groupchat' "
                             f"id='alive'><body>still here</body></message>"))
    while True:
        el = await owner.next_stanza(5)
        assert el is not None, "the room stopped answering"
        if el.tag == "{jabber:client}message" and el.get("id") == "alive":
            assert el.get("type") == "groupchat"
            break
    await owner.disconnect()


def test_malformed_muc_requests_are_answered(xmppd_server):
    asyncio.run(scenario(xmppd_server.port))
    assert "Traceback" not in xmppd_server.log(), xmppd_server.log()[-3000:]


async def relay(port):
    """An IQ between occupants goes out with a rewritten id and its answer finds the way back."""
    a = Client("A", "user@localhost", "password", "127.0.0.1", port)
    b = Client("B", "user2@localhost", "password", "127.0.0.1", port)
    await a.connect()
    await b.connect()
    room = "relay@conference.localhost"
    a.send(ET.fromstring(f"<presence xmlns='jabber:client' to='{room}/A'>"
                         f"<x xmlns='http://jabber.org/protocol/muc'/></presence>"))
    a.send(ET.fromstring(iq("inst", "set", f"<query xmlns='{OWNER}'><x xmlns='{XDATA}' "
                                           f"type='submit'/></query>", to=room)))
    await _answer(a, "inst")
    b.send(ET.fromstring(f"<presence xmlns='jabber:client' to='{room}/B'>"
                         f"<x xmlns='http://jabber.org/protocol/muc'/></presence>"))
    b.send(ET.fromstring(iq("q1", "get", "<query xmlns='jabber:iq:version'/>", to=room + "/A")))
    while True:
        el = await a.next_stanza(5)
        assert el is not None, "the IQ was not relayed"
        if el.tag == "{jabber:client}iq" and el.get("type") == "get":
            break
    assert el.get("from") == room + "/B"
    assert el.get("id") != "q1"           # the room's own id, so a forged answer cannot be routed
    # a made-up id is dropped, the real one is routed back with the original id
    a.send(ET.fromstring(iq("forged", "result", "", to=room + "/B")))
    a.send(ET.fromstring(f"<iq xmlns='jabber:client' type='result' to='{room}/B' id='{el.get('id')}'>"
                         f"<query xmlns='jabber:iq:version'><name>A</name></query></iq>"))
    answer = await _answer(b, "q1")
    assert answer.get("type") == "result" and answer.get("from") == room + "/A"
    assert answer.find("{jabber:iq:version}query/{jabber:iq:version}name").text == "A"
    await a.disconnect()
    await b.disconnect()


def test_iq_between_occupants_round_trip(xmppd_server):
    asyncio.run(relay(xmppd_server.port))
    assert "Traceback" not in xmppd_server.log()


async def shutdown(server):
    """A server shutting down tells occupants with status 332 before closing (§11.2)."""
    c = Client("R", "user@localhost", "password", "127.0.0.1", server.port)
    await c.connect()
    c.send(ET.fromstring("<presence xmlns='jabber:client' to='sd@conference.localhost/R'>"
                         "<x xmlns='http://jabber.org/protocol/muc'/></presence>"))
    c.send(ET.fromstring(iq("ping", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                            to="sd@conference.localhost")))
    await _answer(c, "ping")
    stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
    seen = None
    try:
        while seen is None:
            el = await c.next_stanza(5)
            assert el is not None, "nothing before the stream closed"
            if el.tag == "{jabber:client}presence" and el.get("type") == "unavailable":
                seen = el
    finally:
        await stopping
    codes = [s.get("code") for s in seen.findall("{http://jabber.org/protocol/muc#user}x/"
                                                 "{http://jabber.org/protocol/muc#user}status")]
    assert codes == ["110", "332"]
    assert seen.get("from") == "sd@conference.localhost/R"


def test_shutdown_notifies_occupants(xmppd_server):
    asyncio.run(shutdown(xmppd_server))
