"""XEP-0198 Stream Management over real sockets: acks, resumption after an abrupt drop,
and the hostile cases (another account's id, forged or huge h, resume before
authentication, resume of an ended session, a client that never acks)."""
import socket
import struct
import time
import xml.etree.ElementTree as ET

import pytest

from test_c2s_raw import C, NS_BIND, NS_SASL, Raw, start_server, stanza_error
from test_offline import messages, sync

NS = "urn:xmpp:sm:3"
SM = f"{{{NS}}}"
STANZAS = (f"{C}message", f"{C}presence", f"{C}iq")


class SMClient(Raw):
    """A raw client that counts the stanzas it handled since SM was enabled."""

    handled = 0
    counting = False

    def next(self, timeout=None):
        el = super().next(timeout)
        if self.counting and el.tag in STANZAS:
            self.handled += 1
        return el

    def authenticate(self, user):
        self.open()
        self.starttls()
        el = self.auth(user, "pw")
        assert el.tag == f"{{{NS_SASL}}}success", ET.tostring(el)
        return self.open()

    def enable(self, resume=True, max_=None):
        attrs = " resume='true'" if resume else ""
        if max_ is not None:
            attrs += f" max='{max_}'"
        self.send(f"<enable xmlns='{NS}'{attrs}/>")
        el = self.next()
        assert el.tag == f"{SM}enabled", ET.tostring(el)
        self.counting = True
        return el

    def drop(self):
        """Vanish without </stream:stream> (RST, like a phone losing its network)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory, "--insecure-auth",
                     config="smacks_max_resumption_time = 30\n")
    yield s
    s.stop()


@pytest.fixture
def clients(server):
    made = []

    def connect():
        c = SMClient(server.port)
        made.append(c)
        return c
    yield connect
    for c in made:
        c.close()


def login(connect, user, resource="r"):
    c = connect()
    c.login(user, "pw", resource=resource)
    return c


def bodies(els):
    return [m.find(f"{C}body").text for m in els if m.find(f"{C}body") is not None]


def test_features_enable_and_acks(clients):
    c = clients()
    feats = c.authenticate("ack")
    assert feats.find(f"{SM}sm") is not None and feats.find(f"{{{NS_BIND}}}bind") is not None
    # enable before bind is refused (§3)
    c.send(f"<enable xmlns='{NS}'/>")
    el = c.next()
    assert el.tag == f"{SM}failed" and el.find("{urn:ietf:params:xml:ns:xmpp-stanzas}unexpected-request") is not None
    assert c.bind("r").get("type") == "result"
    enabled = c.enable(resume=True, max_=100000)
    assert int(enabled.get("max")) == 30            # capped by smacks_max_resumption_time
    assert len(enabled.get("id")) >= 32
    c.send(f"<enable xmlns='{NS}'/>")                  # twice
    assert c.next().tag == f"{SM}failed"
    for i in range(3):
        c.send(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
    c.send(f"<r xmlns='{NS}'/>")
    got = [c.next() for _ in range(4)]
    assert [e.get("id") for e in got[:3]] == ["p0", "p1", "p2"]
    assert got[3].tag == f"{SM}a" and got[3].get("h") == "3"
    c.send(f"<a xmlns='{NS}' h='3'/>")
    # The server asks for acks by itself when something stays unacked.
    c.send("<iq type='get' id='p3'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert c.next().get("id") == "p3"
    r = c.next(3)
    assert r.tag == f"{SM}r"
    c.send(f"<a xmlns='{NS}' h='4'/>")
    c.nothing(0.3)


def test_abrupt_drop_then_resume_delivers_100_messages_exactly_once_in_order(clients):
    juliet = clients()
    juliet.authenticate("juliet")
    juliet.bind("balcony")
    token = juliet.enable().get("id")
    juliet.send("<presence/>")
    romeo = login(clients, "romeo")
    romeo.send("<presence/>")
    sync(romeo)
    for i in range(40):
        romeo.send(f"<message to='juliet@localhost/balcony' type='chat' id='m{i}'><body>{i}</body></message>")
    got = []
    while len(got) < 25:
        el = juliet.next()
        if el.tag == f"{C}message":
            got.append(el)
    juliet.drop()                                   # 15 or so are in flight or unread
    for i in range(40, 100):
        romeo.send(f"<message to='juliet@localhost/balcony' type='chat' id='m{i}'><body>{i}</body></message>")
    sync(romeo)
    romeo.nothing()                                 # no bounce: the session is still there

    again = clients()
    feats = again.authenticate("juliet")
    assert feats.find(f"{SM}sm") is not None
    again.send(f"<resume xmlns='{NS}' previd='{token}' h='{juliet.handled}'/>")
    el = again.next()
    assert el.tag == f"{SM}resumed", ET.tostring(el)
    assert el.get("previd") == token and el.get("h") == "1"     # our initial presence
    again.counting = True
    again.handled = juliet.handled
    got += messages(again, 1.0)
    assert bodies(got) == [str(i) for i in range(100)]
    # Counters carried over: an <r/> now reports everything we sent, the ack clears the queue.
    again.send(f"<a xmlns='{NS}' h='{again.handled}'/><r xmlns='{NS}'/>")
    a = again.next()
    assert a.tag == f"{SM}a" and a.get("h") == "1"
    # Still the same session, with its presence kept: romeo reaches it by full JID.
    romeo.send("<message to='juliet@localhost/balcony' type='chat' id='last'><body>after</body></message>")
    assert bodies(messages(again, 0.5)) == ["after"]


def test_resume_replaces_a_still_open_connection_with_conflict(clients):
    old = clients()
    old.authenticate("ghost")
    old.bind("r")
    token = old.enable().get("id")
    new = clients()
    new.authenticate("ghost")
    new.send(f"<resume xmlns='{NS}' previd='{token}' h='0'/>")
    assert new.next().tag == f"{SM}resumed"
    assert old.stream_error() == "conflict"
    new.send("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert new.next().get("id") == "alive"


def test_hostile_resumes(clients):
    victim = clients()
    victim.authenticate("victim")
    victim.bind("r")
    token = victim.enable().get("id")
    victim.send("<iq type='get' id='v1'><ping xmlns='urn:xmpp:ping'/></iq>")
    victim.next()

    # before authentication: the stream is closed
    pre = clients()
    pre.open()
    pre.send(f"<resume xmlns='{NS}' previd='{token}' h='0'/>")
    assert pre.stream_error() == "not-authorized"

    # another account with the victim's id: same answer as for an unknown id
    mallory = clients()
    mallory.authenticate("mallory")
    for previd in (token, "nope", token + "x", ""):
        mallory.send(f"<resume xmlns='{NS}' previd='{previd}' h='0'/>")
        el = mallory.next()
        assert el.tag == f"{SM}failed" and el.find(
            "{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None, previd
    assert mallory.bind("r").get("type") == "result"   # §5: may bind after a failed resume
    victim.send("<iq type='get' id='v2'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert victim.next().get("id") == "v2"            # untouched

    # forged h: more than was ever sent
    thief = clients()
    thief.authenticate("victim")
    thief.send(f"<resume xmlns='{NS}' previd='{token}' h='1000'/>")
    assert thief.next().tag == f"{SM}failed"
    assert thief.stream_error() == "undefined-condition"
    victim.send("<iq type='get' id='v3'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert victim.next().get("id") == "v3"

    # huge or malformed h on <a/>
    for h, cond in (("99999999999999999999", "bad-format"), ("-1", "bad-format"),
                    ("4294967295", "undefined-condition")):
        c = clients()
        c.login(f"acker{len(h)}", "pw")
        c.enable(resume=False)
        c.send(f"<a xmlns='{NS}' h='{h}'/>")
        assert c.stream_error() == cond, h
        if cond == "undefined-condition":   # §4: the application condition says what was wrong
            assert (f"<handled-count-too-high xmlns='{NS}' h='{h}' send-count='0'/>"
                    in c.raw.decode()), c.raw

    # resume of a session that ended with a clean close
    gone = clients()
    gone.authenticate("gone")
    gone.bind("r")
    gtoken = gone.enable().get("id")
    gone.send("</stream:stream>")
    gone.wait_closed()
    back = clients()
    back.authenticate("gone")
    back.send(f"<resume xmlns='{NS}' previd='{gtoken}' h='0'/>")
    el = back.next()
    assert el.tag == f"{SM}failed"


def test_timeout_ends_the_session_and_keeps_its_unacked_stanzas(xmppd_server_factory, tmp_path):
    cfg = tmp_path / "xmppd.toml"
    cfg.write_text("smacks_max_resumption_time = 2\n")
    server = xmppd_server_factory("--config", cfg)
    romeo = Raw(server.port)
    romeo.login("romeo", "pw", resource="r")
    romeo.send("<presence/>")
    room = "verona@conference.localhost"
    romeo.send(f"<presence to='{room}/romeo'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    romeo.send(f"<iq type='set' id='cfg' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
               "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
    while romeo.next().get("id") != "cfg":
        pass
    j = SMClient(server.port)
    j.authenticate("juliet")
    j.bind("phone")
    token = j.enable().get("id")
    j.send("<presence/>")
    j.send("<presence to='romeo@localhost/r'/>")      # directed presence
    j.send(f"<presence to='{room}/juliet'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    sync(j)
    j.drop()
    time.sleep(0.5)
    romeo.send("<message to='juliet@localhost/phone' type='chat' id='c1'><body>one</body></message>"
               "<message to='juliet@localhost' id='n1'><body>two</body></message>"
               "<message to='juliet@localhost/phone' type='headline' id='h1'><body>news</body></message>"
               "<iq to='juliet@localhost/phone' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
    sync(romeo)
    got = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not any(e.get("id") == "q1" for e in got):
        try:
            got.append(romeo.next(0.5))
        except AssertionError:
            pass
    by_id = {e.get("id"): e for e in got if e.get("id")}
    assert stanza_error(by_id["q1"]) == ("wait", "recipient-unavailable")
    assert stanza_error(by_id["h1"]) == ("wait", "recipient-unavailable")
    assert any(e.tag == f"{C}presence" and e.get("type") == "unavailable"
               and e.get("from") == "juliet@localhost/phone" for e in got)
    # ... and she left the room like any disconnected occupant
    assert any(e.tag == f"{C}presence" and e.get("type") == "unavailable"
               and e.get("from") == f"{room}/juliet" for e in got)
    # The chat and normal messages went to offline storage.
    j2 = SMClient(server.port)
    j2.authenticate("juliet")
    j2.send(f"<resume xmlns='{NS}' previd='{token}' h='0'/>")
    assert j2.next().tag == f"{SM}failed"
    j2.bind("laptop")
    j2.send("<presence/>")
    assert [m.get("id") for m in messages(j2, 1.0) if m.get("type") != "error"] == ["c1", "n1"]


def test_a_client_that_never_acks_is_closed(xmppd_server_factory, tmp_path):
    cfg = tmp_path / "xmppd.toml"
    cfg.write_text("smacks_max_unacked_stanzas = 10\n")
    server = xmppd_server_factory("--config", cfg)
    lazy = SMClient(server.port)
    lazy.login("lazy", "pw")
    lazy.enable()
    lazy.send("<presence/>")
    sender = Raw(server.port)
    sender.login("sender", "pw")
    for i in range(15):
        sender.send(f"<message to='lazy@localhost/raw' type='chat' id='x{i}'><body>{i}</body></message>")
    seen = []
    with pytest.raises(AssertionError):
        while True:
            seen.append(lazy.next(3))
    assert lazy.footer and b"resource-constraint" in lazy.raw
    lazy.close()
    time.sleep(0.5)
    # Nothing is lost: what was not acked is waiting in offline storage.
    back = Raw(server.port)
    back.login("lazy", "pw", resource="again")
    back.send("<presence/>")
    assert bodies(messages(back, 1.0)) == [str(i) for i in range(15)]


def test_counters_wrap_at_2_32():
    """§4: h is a 32-bit counter; acks across the wrap drop the right stanzas."""
    from xmppd.session.sm import WRAP, SMState, parse_h
    s = SMState()
    s.acked = WRAP - 2
    s.queue.extend([b"a", b"b", b"c", b"d"])
    s.size = 4
    assert s.sent == 2                         # (2^32 - 2 + 4) mod 2^32
    assert s.ack(1) and list(s.queue) == [b"d"] and s.acked == 1
    assert not s.ack(3)                        # more than was sent
    assert s.ack(2) and not s.queue and s.size == 0
    assert parse_h("4294967295") == WRAP - 1 and parse_h("4294967296") is None
    assert parse_h("-1") is None and parse_h("") is None and parse_h("1e3") is None
