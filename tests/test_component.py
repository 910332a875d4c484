"""XEP-0114 external components on xmppd's component port.

A third-party component library (slixmpp's ComponentXMPP) connects, receives
stanzas for its domain and sends from JIDs at it; raw sockets check the
handshake and every refusal (wrong secret, unknown domain, second
connection, foreign ``from``, oversize stanzas, DTDs) gets its stream error;
a configured component that is not connected bounces with
service-unavailable.
"""
import asyncio
import hashlib
import re
import socket
import time
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.componentxmpp import ComponentXMPP

from test_c2s_raw import NS_STREAMS, Raw, start_server, stanza_error

C = "{jabber:client}"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
SECRET = "s3cret-for-tests"
CONFIG = f"""
component_port = 0
[[components]]
domain = "bot.localhost"
secret = "{SECRET}"
[[components]]
domain = "gw.localhost"
secret = "other-secret"
"""
COMPONENT_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                    "xmlns:stream='http://etherx.jabber.org/streams' to='{to}'>")


def component_port(server):
    m = server.wait_for_log(r"component listening on \S+:(\d+)")
    return int(m[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory, "--insecure-auth", config=CONFIG)
    s.component_port = component_port(s)
    yield s
    s.stop()


class RawComponent(Raw):
    """A component over a raw socket (tests send what no library would)."""

    def open_component(self, to="bot.localhost"):
        self._reset()
        self.send(COMPONENT_HEADER.format(to=to))
        deadline = time.monotonic() + self.timeout
        while self.header is None and not self.eof and time.monotonic() < deadline:
            self._pump(deadline)
        assert self.header is not None, self.raw
        return self.header.get("id")

    def handshake(self, to="bot.localhost", secret=SECRET):
        sid = self.open_component(to)
        self.send("<handshake>%s</handshake>" % hashlib.sha1((sid + secret).encode()).hexdigest())
        return self.next()


@pytest.fixture
def comp(server):
    made = []

    def connect():
        c = RawComponent(server.component_port)
        made.append(c)
        return c
    yield connect
    for c in made:
        c.close()


@pytest.fixture
def client(server):
    made = []

    def connect(user):
        c = Raw(server.port)
        c.login(user)
        made.append(c)
        return c
    yield connect
    for c in made:
        c.close()


def wait_disconnected(server, domain, timeout=5):
    """The server logs the component's departure; later stanzas must find the Offline route."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(rf"component {re.escape(domain)} disconnected", server.log()):
            return
        time.sleep(0.05)
    pytest.fail(f"{domain} not disconnected\n{server.log()}")


# -- a real component library ------------------------------------------------

def test_slixmpp_component_connects_sends_and_receives(server, client):
    alice = client("alice")
    alice.send("<presence/>")

    async def scenario():
        bot = ComponentXMPP("bot.localhost", SECRET, "127.0.0.1", server.component_port)
        bot.register_plugin("xep_0030")
        got = asyncio.get_running_loop().create_future()
        bot.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        ready = asyncio.get_running_loop().create_future()
        bot.add_event_handler("session_start", lambda _: ready.done() or ready.set_result(1))
        bot.connect()
        await asyncio.wait_for(ready, 10)
        # a client's stanza for the component's domain reaches it, 'from' stamped
        alice.send("<message to='echo@bot.localhost' type='chat' id='m1'><body>ping</body>"
                   "</message>")
        m = await asyncio.wait_for(got, 5)
        assert m["body"] == "ping" and m["from"].full == alice.full
        # the component sends from any JID at its domain
        bot.send_message(mto=alice.full, mfrom="echo@bot.localhost/x", mbody="pong", mtype="chat")
        # and queries the server like any entity
        items = await bot.plugin["xep_0030"].get_items(jid="localhost", ifrom="bot.localhost",
                                                       timeout=5)
        bot.disconnect()
        await bot.wait_until("disconnected", timeout=5)
        return items

    items = asyncio.run(scenario())
    jids = {i[0] for i in items["disco_items"]["items"]}
    assert "bot.localhost" in jids and "gw.localhost" not in jids, jids   # connected ones only
    reply = alice.next()
    while reply.tag != f"{C}message":        # (her own presence comes back first)
        reply = alice.next()
    assert reply.get("from") == "echo@bot.localhost/x" and reply.findtext(f"{C}body") == "pong"
    assert b"component:accept" not in alice.raw       # re-homed in jabber:client


def test_disco_items_lists_connected_components_only(server, comp, client):
    alice = client("carol")
    alice.send("<iq type='get' to='localhost' id='d1'><query xmlns='%s'/></iq>" % DISCO_ITEMS)
    before = {i.get("jid") for i in alice.next().iter(f"{{{DISCO_ITEMS}}}item")}
    assert "gw.localhost" not in before and "conference.localhost" in before
    gw = comp()
    assert gw.handshake("gw.localhost", "other-secret").tag == "{jabber:component:accept}handshake"
    alice.send("<iq type='get' to='localhost' id='d2'><query xmlns='%s'/></iq>" % DISCO_ITEMS)
    after = {i.get("jid") for i in alice.next().iter(f"{{{DISCO_ITEMS}}}item")}
    assert "gw.localhost" in after


def test_stanzas_both_ways_and_iq_round_trip(server, comp, client):
    bot = comp()
    assert bot.handshake().tag == "{jabber:component:accept}handshake"
    dave = client("dave")
    dave.send("<iq type='get' to='bot.localhost' id='q1'><query xmlns='jabber:iq:version'/></iq>")
    iq = bot.next()
    assert iq.get("from") == dave.full and iq.get("to") == "bot.localhost"
    bot.send(f"<iq type='result' from='bot.localhost' to='{dave.full}' id='q1'>"
             "<query xmlns='jabber:iq:version'><name>bot</name></query></iq>")
    reply = dave.next()
    assert reply.get("type") == "result" and reply.get("id") == "q1"
    assert reply.find("{jabber:iq:version}query/{jabber:iq:version}name").text == "bot"
    # a component's IQ to an unknown local user gets the server's error back
    bot.send("<iq type='get' from='x@bot.localhost' to='nobody-here@localhost/r' id='q2'>"
             "<ping xmlns='urn:xmpp:ping'/></iq>")
    err = bot.next()
    assert err.get("type") == "error" and err.get("to") == "x@bot.localhost"


def test_disconnected_component_bounces_service_unavailable(server, comp, client):
    erin = client("erin")
    erin.send("<message to='gw.localhost' id='b1' type='chat'><body>x</body></message>")
    el = erin.next()
    assert el.get("type") == "error" and stanza_error(el) == ("cancel", "service-unavailable")
    erin.send("<iq to='room@gw.localhost' id='b2' type='get'><query xmlns='x'/></iq>")
    assert stanza_error(erin.next()) == ("cancel", "service-unavailable")
    # after a connected component leaves, the bounce comes back
    gw = comp()
    gw.handshake("gw.localhost", "other-secret")
    gw.send("</stream:stream>")
    gw.wait_closed()
    wait_disconnected(server, "gw.localhost")
    erin.send("<message to='gw.localhost' id='b3' type='chat'><body>y</body></message>")
    assert stanza_error(erin.next()) == ("cancel", "service-unavailable")
    # an unconfigured domain is another server: remote-server-not-found
    erin.send("<message to='nope.localhost' id='b4' type='chat'><body>z</body></message>")
    assert stanza_error(erin.next())[1] == "remote-server-not-found"


# -- refusals ---------------------------------------------------------------------

def test_wrong_secret_is_not_authorized(comp):
    c = comp()
    sid = c.open_component()
    c.send("<handshake>%s</handshake>" % hashlib.sha1((sid + "wrong").encode()).hexdigest())
    assert c.stream_error() == "not-authorized"


def test_secret_of_another_component_is_not_authorized(comp):
    c = comp()
    el = c.handshake("bot.localhost", "other-secret")
    assert el.tag == f"{{{NS_STREAMS}}}error"
    assert el[0].tag == "{urn:ietf:params:xml:ns:xmpp-streams}not-authorized"
    c.wait_closed()


def test_unknown_domain_is_host_unknown(comp):
    c = comp()
    c.send(COMPONENT_HEADER.format(to="unknown.localhost"))
    assert c.stream_error() == "host-unknown"
    c = comp()
    c.send(COMPONENT_HEADER.format(to="localhost"))     # the server itself is no component
    assert c.stream_error() == "host-unknown"


def test_client_namespace_is_refused(comp):
    c = comp()
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='bot.localhost'>")
    assert c.stream_error() == "invalid-namespace"


def test_stanza_before_handshake_is_not_authorized(comp):
    c = comp()
    c.open_component()
    c.send("<message from='bot.localhost' to='alice@localhost'><body>early</body></message>")
    assert c.stream_error() == "not-authorized"


def test_second_connection_for_a_domain_is_conflict(comp):
    first = comp()
    assert first.handshake().tag == "{jabber:component:accept}handshake"
    second = comp()
    sid = second.open_component()
    second.send("<handshake>%s</handshake>" % hashlib.sha1((sid + SECRET).encode()).hexdigest())
    assert second.stream_error() == "conflict"
    # the first one still works
    first.send("<iq type='get' from='bot.localhost' to='localhost' id='p1'>"
               "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert first.next().get("type") == "result"


@pytest.mark.parametrize("frm", ["alice@localhost/x", "bot.localhost.evil", "localhost",
                                 "gw.localhost", "a@sub.bot.localhost", "@@bad"])
def test_foreign_from_is_invalid_from(comp, frm):
    c = comp()
    c.handshake()
    c.send(f"<message from='{frm}' to='alice@localhost'><body>spoof</body></message>")
    assert c.stream_error() == "invalid-from"


def test_missing_from_or_to_is_improper_addressing(comp):
    c = comp()
    c.handshake()
    c.send("<message to='alice@localhost'><body>x</body></message>")
    assert c.stream_error() == "improper-addressing"
    c = comp()
    c.handshake()
    c.send("<presence from='bot.localhost'/>")
    assert c.stream_error() == "improper-addressing"


def test_oversize_stanza_is_policy_violation(comp):
    c = comp()
    c.open_component()
    c.send("<handshake>" + "a" * 20000 + "</handshake>")       # > max_preauth_size
    assert c.stream_error() == "policy-violation"
    c = comp()
    c.handshake()
    body = "x" * (300 * 1024)                                   # > max_stanza_size
    c.send(f"<message from='bot.localhost' to='alice@localhost'><body>{body}</body></message>")
    assert c.stream_error() == "policy-violation"


def test_dtd_is_restricted_xml(comp):
    c = comp()
    c.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY a 'bbbbbbbbbbbb'>]>"
           + COMPONENT_HEADER.format(to="bot.localhost").split("?>", 1)[1])
    assert c.stream_error() == "restricted-xml"


@pytest.mark.parametrize("evil", ["<!-- hi -->", "<?pi x?>"])
def test_restricted_xml_is_refused(comp, evil):
    c = comp()
    c.handshake()
    c.send(evil)
    assert c.stream_error() == "restricted-xml"


def test_garbage_is_not_well_formed_and_unknown_elements_refused(comp):
    c = comp()
    c.handshake()
    c.send("<message from='bot.localhost' to='a@localhost'></mess>")
    assert c.stream_error() == "not-well-formed"
    c = comp()
    c.handshake()
    c.send("<foo from='bot.localhost' to='a@localhost'/>")
    assert c.stream_error() == "unsupported-stanza-type"


def test_flood_is_routed_in_order_and_the_server_stays_up(server, comp, client):
    """Many stanzas in one write are all delivered, in order (limits slow down, never drop)."""
    bot = comp()
    bot.handshake()
    frank = client("frank")
    frank.send("<presence/>")
    frank.next()
    n = 500
    bot.send("".join(f"<message from='bot.localhost' to='{frank.full}' id='f{i}'>"
                     f"<body>{i}</body></message>" for i in range(n)))
    ids = [frank.next(10).get("id") for _ in range(n)]
    assert ids == [f"f{i}" for i in range(n)]
    assert server.returncode is None


def test_stream_closes_cleanly(comp):
    c = comp()
    c.handshake()
    c.send("</stream:stream>")
    c.wait_closed()
    assert c.footer


def test_slow_handshake_times_out(tmp_path_factory):
    s = start_server(tmp_path_factory, config=CONFIG.replace("component_port = 0",
                                                            "component_port = 0\npreauth_timeout = 1"))
    try:
        c = RawComponent(component_port(s))
        c.open_component()
        assert c.stream_error(timeout=5) == "connection-timeout"
        c.close()
    finally:
        s.stop()


def test_config_rejects_bad_component_entries(tmp_path):
    from xmppd import config
    from xmppd.config import ConfigError
    for text, msg in [
        ("[[components]]\ndomain = 'a.localhost'\n", "needs a secret"),
        ("[[components]]\nsecret = 'x'\n", "needs a domain"),
        ("[[components]]\ndomain = 'a@b'\nsecret = 'x'\n", "not a domain"),
        ("[[components]]\ndomain = 'localhost'\nsecret = 'x'\n", "server's domain"),
        ("[[components]]\ndomain = 'a.localhost'\nsecret = 'x'\nport = 1\n", "unknown key"),
        ("components = ['a']\n", "list of tables"),
        ("component_port = 70000\n", "between 0 and 65535"),
    ]:
        p = tmp_path / "c.toml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            config.load(str(p))


# -- XEP-0033 multicast from a component --------------------------------------------

NS_ADDRESS = "http://jabber.org/protocol/address"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


def _bcc(*jids):
    return f"<addresses xmlns='{NS_ADDRESS}'>" + "".join(
        f"<address type='bcc' jid='{j}'/>" for j in jids) + "</addresses>"


def test_multicast_fans_out_to_every_bcc_recipient(server, comp, client):
    bot = comp()
    bot.handshake()
    a, b = client("mc1"), client("mc2")
    gw = comp()
    gw.handshake("gw.localhost", "other-secret")
    bot.send(f"<message from='room@bot.localhost/n' to='localhost' type='groupchat' id='mc'>"
             f"<body>to all &amp; more</body>"
             + _bcc(a.full, b.full, "mc3@localhost/gone", "someone@gw.localhost/x") + "</message>")
    for c in (a, b):
        el = c.next()
        assert el.get("id") == "mc" and el.get("to") == c.full
        assert el.findtext(f"{C}body") == "to all & more"
        assert el.find(f"{{{NS_ADDRESS}}}addresses") is None          # bcc: never shown
        assert el.get("from") == "room@bot.localhost/n"
    el = gw.next()                                                     # another component
    assert el.get("to") == "someone@gw.localhost/x" and el.findtext(
        "{jabber:component:accept}body") == "to all & more"


def test_multicast_refusals(server, comp, client):
    bot = comp()
    bot.handshake()
    bot.send("<message from='bot.localhost' to='localhost' id='bad'><body>x</body>"
             f"<addresses xmlns='{NS_ADDRESS}'><address type='to' jid='a@localhost/r'/></addresses>"
             "</message>")
    err = bot.next()
    assert err.get("id") == "bad" and err.get("type") == "error"
    assert err.find("{jabber:component:accept}error/"
                    "{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None
    many = _bcc(*[f"u{i}@localhost/r" for i in range(1001)])           # > component_multicast_max
    bot.send(f"<message from='bot.localhost' to='localhost' id='many'><body>x</body>{many}</message>")
    err = bot.next()
    assert err.get("id") == "many" and err.find(
        "{jabber:component:accept}error/{urn:ietf:params:xml:ns:xmpp-stanzas}not-acceptable") is not None


def test_multicast_is_offered_to_components_only(server, comp, client):
    bot = comp()
    bot.handshake()
    bot.send(f"<iq type='get' from='bot.localhost' to='localhost' id='di'><query xmlns='{DISCO_INFO}'/></iq>")
    feats = {f.get("var") for f in bot.next().iter(f"{{{DISCO_INFO}}}feature")}
    assert NS_ADDRESS in feats
    c = client("discoverer")
    c.send(f"<iq type='get' to='localhost' id='di'><query xmlns='{DISCO_INFO}'/></iq>")
    feats = {f.get("var") for f in c.next().iter(f"{{{DISCO_INFO}}}feature")}
    assert NS_ADDRESS not in feats and "urn:xmpp:ping" in feats


def test_flood_from_a_limited_address_is_slowed_not_dropped(tmp_path_factory):
    """Outside limits_exempt a component's reads are paced (component_read_rate_limit), as for clients."""
    s = start_server(tmp_path_factory, "--insecure-auth", config=CONFIG.replace(
        "component_port = 0", "component_port = 0\nlimits_exempt = []\n"
        "component_read_rate_limit = 4096"))
    try:
        port = component_port(s)
        bot = RawComponent(port)
        bot.handshake()
        rcpt = Raw(s.port)
        rcpt.login("paced")
        rcpt.send("<presence/>")
        rcpt.next()
        n = 100
        pad = "p" * 200
        start = time.monotonic()
        bot.send("".join(f"<message from='bot.localhost' to='{rcpt.full}' id='x{i}'><body>{pad}"
                         "</body></message>" for i in range(n)))       # ~28 KB, 2 s burst = 8 KB
        ids = [rcpt.next(20).get("id") for _ in range(n)]
        elapsed = time.monotonic() - start
        assert ids == [f"x{i}" for i in range(n)]                        # nothing lost, in order
        assert elapsed >= 3.0, elapsed                                   # (28 KB - 8 KB) / 4 KB/s
        assert s.returncode is None
        bot.close()
        rcpt.close()
    finally:
        s.stop()


def test_component_that_stops_reading_is_closed_at_max_send_buffer(tmp_path_factory):
    """Its unsent backlog is capped like a client's; then its domain bounces again."""
    s = start_server(tmp_path_factory, "--insecure-auth", config=CONFIG.replace(
        "component_port = 0", "component_port = 0\nmax_send_buffer = 1048576"))
    try:
        sloth = RawComponent(component_port(s))
        sloth.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sloth.handshake()
        talker = Raw(s.port)
        talker.login("talker")
        body = "z" * 2000
        chunk = "".join(f"<message to='x@bot.localhost' type='chat'><body>{body}</body></message>"
                        for _ in range(50)).encode()
        for _ in range(200):                 # ~21 MB towards the component
            try:
                talker.sock.sendall(chunk)
            except OSError:
                break
        s.wait_for_log(r"over max_send_buffer \(1048576\): the client does not read; "
                       r"closing \(bot\.localhost\)", timeout=30)
        wait_disconnected(s, "bot.localhost")
        check = Raw(s.port)
        check.login("checker")
        check.send("<message to='bot.localhost' id='after' type='chat'><body>x</body></message>")
        assert stanza_error(check.next())[1] == "service-unavailable"
        check.close()
        talker.close()
        sloth.close()
    finally:
        s.stop()
