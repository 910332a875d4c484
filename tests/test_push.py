"""XEP-0357 Push Notifications over real sockets.

The App Server is an external component (slixmpp's ComponentXMPP, or a raw
socket when the test must answer with errors or watch exact bytes); clients
are slixmpp and raw sockets (a raw XEP-0198 client drops its TCP connection
to hibernate). The server must publish exactly one well-formed summary per
wake-up, keep registrations across restarts, drop them when the App Server
refuses or the account goes, and refuse everything it cannot or must not do.
"""
import asyncio
import re
import signal
import ssl
import time
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import XmppdServer
from test_c2s_raw import C, Raw, start_server, stanza_error
from test_component import RawComponent, component_port
from test_ctl import ctl
from test_offline import sync
from test_sm import NS as NS_SM, SMClient

NS = "urn:xmpp:push:0"
PS = "http://jabber.org/protocol/pubsub"
XD = "jabber:x:data"
CA = "{jabber:component:accept}"
SECRET = "push-secret-for-tests"
APP = "push.localhost"
CONFIG = f"""
component_port = 0
smacks_max_resumption_time = 30
push_min_interval = 1
push_max_registrations = 3
[[components]]
domain = "{APP}"
secret = "{SECRET}"
[[components]]
domain = "other.localhost"
secret = "other-secret"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory, "--insecure-auth", config=CONFIG)
    s.component_port = component_port(s)
    yield s
    s.stop()


@pytest.fixture
def connect(server):
    made = []

    def make(kind=Raw):
        c = kind(server.component_port if kind is RawComponent else server.port)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def app_server(connect, domain=APP, secret=SECRET):
    c = connect(RawComponent)
    assert c.handshake(domain, secret).tag == f"{CA}handshake"
    return c


def login(connect, user, resource="r", kind=Raw):
    c = connect(kind)
    c.login(user, "pw", resource=resource)
    return c


def enable_xml(jid=APP, node="node-1", form="", iq_id="e1", to=""):
    to = f" to='{to}'" if to else ""
    return (f"<iq type='set' id='{iq_id}'{to}><enable xmlns='{NS}' jid='{jid}' node='{node}'>"
            f"{form}</enable></iq>")


def answer(c, xml, iq_id):
    c.send(xml)
    while True:
        el = c.next()
        if el.tag == f"{C}iq" and el.get("id") == iq_id:
            return el


def enable(c, **kw):
    el = answer(c, enable_xml(**kw), kw.get("iq_id", "e1"))
    assert el.get("type") == "result", ET.tostring(el)


def bye(c):
    """End the session cleanly and give the server a moment to unbind it."""
    c.send("</stream:stream>")
    c.wait_closed()
    c.close()
    time.sleep(0.2)


def fields(x):
    return {f.get("var"): [v.text for v in f.findall(f"{{{XD}}}value")]
            for f in x.findall(f"{{{XD}}}field")}


def publishes(comp, wait=1.5):
    """Every notification IQ the App Server gets within ``wait`` seconds."""
    out = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            el = comp.next(max(0.05, deadline - time.monotonic()))
        except AssertionError:
            break
        out.append(el)
    return out


def summary(iq):
    """Check one notification's shape (XEP-0357 §7); its summary form and publish element."""
    assert iq.tag == f"{CA}iq" and iq.get("type") == "set", ET.tostring(iq)
    pubsub = iq.find(f"{{{PS}}}pubsub")
    publish = pubsub.find(f"{{{PS}}}publish")
    items = publish.findall(f"{{{PS}}}item")
    assert len(items) == 1
    x = items[0].find(f"{{{NS}}}notification/{{{XD}}}x")
    assert x.get("type") == "submit"
    form = fields(x)
    assert form["FORM_TYPE"] == ["urn:xmpp:push:summary"]
    return form, publish, pubsub


def send_message(c, to, body, i="m"):
    c.send(f"<message to='{to}' type='chat' id='{i}'><body>{body}</body></message>")


# -- the whole story with real libraries ---------------------------------------------------

def test_slixmpp_client_enables_push_to_a_slixmpp_app_server(server, connect):
    """Offline message -> exactly one publish with the summary and the publish-options."""
    sender = login(connect, "romeo")

    async def scenario():
        loop = asyncio.get_running_loop()
        app = ComponentXMPP(APP, SECRET, "127.0.0.1", server.component_port)
        got = []
        arrived = asyncio.Event()

        def on_publish(iq):
            got.append(ET.fromstring(ET.tostring(iq.xml)))
            iq.reply().send()
            arrived.set()
        app.register_handler(Callback("push publish", MatchXPath(
            f"{{{app.default_ns}}}iq/{{{PS}}}pubsub"), on_publish))
        ready = loop.create_future()
        app.add_event_handler("session_start", lambda _: ready.done() or ready.set_result(1))
        app.connect()
        await asyncio.wait_for(ready, 10)

        phone = slixmpp.ClientXMPP("juliet@localhost/phone", "pw")
        phone.enable_direct_tls = False
        phone.ssl_context.check_hostname = False
        phone.ssl_context.verify_mode = ssl.CERT_NONE
        phone.register_plugin("xep_0030")
        phone.connect("127.0.0.1", server.port)
        await phone.wait_until("session_start", timeout=10)
        info = await phone.plugin["xep_0030"].get_info(jid="juliet@localhost", timeout=5)
        assert NS in info["disco_info"]["features"]          # §4, on the account
        iq = phone.make_iq_set()
        iq.xml.append(ET.fromstring(
            f"<enable xmlns='{NS}' jid='{APP}' node='yxs32uqsflafdk3iuqo'>"
            f"<x xmlns='{XD}' type='submit'><field var='FORM_TYPE'>"
            "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            "<field var='secret'><value>eruio234vzxc2kla-91</value></field></x></enable>"))
        result = await iq.send(timeout=5)
        assert result["type"] == "result"
        phone.disconnect()
        await phone.wait_until("disconnected", timeout=5)
        await asyncio.sleep(0.3)                      # the server has ended the session

        send_message(sender, "juliet@localhost", "wherefore art thou")
        await asyncio.wait_for(arrived.wait(), 5)
        await asyncio.sleep(1.5)                      # and nothing more
        app.disconnect()
        await app.wait_until("disconnected", timeout=5)
        return got

    got = asyncio.run(scenario())
    assert len(got) == 1, [ET.tostring(g) for g in got]
    iq = got[0]
    assert iq.get("from") == "juliet@localhost" and iq.get("to") == APP
    form, publish, pubsub = summary(iq)
    assert publish.get("node") == "yxs32uqsflafdk3iuqo"
    assert form["message-count"] == ["1"]
    assert form["last-message-sender"] == ["romeo@localhost"]
    assert "last-message-body" not in form                # privacy default (push_include_body)
    assert b"wherefore" not in ET.tostring(iq)
    options = fields(pubsub.find(f"{{{PS}}}publish-options/{{{XD}}}x"))
    assert options == {"FORM_TYPE": ["http://jabber.org/protocol/pubsub#publish-options"],
                       "secret": ["eruio234vzxc2kla-91"]}
    assert "eruio234" not in server.log()                   # the secret is not logged


def test_disable_stops_notifications(server, connect):
    app = app_server(connect)
    c = login(connect, "dis")
    enable(c, node="a")
    enable(c, node="b", iq_id="e2", to="dis@localhost")     # 'to' = own bare JID: the same
    bye(c)
    sender = login(connect, "dis-sender")
    send_message(sender, "dis@localhost", "one")
    got = publishes(app)
    assert sorted(summary(p)[1].get("node") for p in got) == ["a", "b"]
    c = login(connect, "dis")
    el = answer(c, f"<iq type='set' id='d1'><disable xmlns='{NS}' jid='{APP}' node='a'/></iq>", "d1")
    assert el.get("type") == "result"
    bye(c)
    time.sleep(1.1)                                   # push_min_interval
    send_message(sender, "dis@localhost", "two", "m2")
    got = publishes(app)
    assert [summary(p)[1].get("node") for p in got] == ["b"]
    c = login(connect, "dis")
    el = answer(c, f"<iq type='set' id='d2'><disable xmlns='{NS}' jid='{APP}'/></iq>", "d2")
    assert el.get("type") == "result"                 # no node: every node at that App Server
    el = answer(c, f"<iq type='set' id='d3'><disable xmlns='{NS}' jid='{APP}'/></iq>", "d3")
    assert el.get("type") == "result"                 # idempotent
    bye(c)
    time.sleep(1.1)
    send_message(sender, "dis@localhost", "three", "m3")
    assert publishes(app) == []


# -- XEP-0198 hibernation ----------------------------------------------------------------

def sm_login(connect, user):
    c = connect(SMClient)
    c.authenticate(user)
    c.bind("phone")
    token = c.enable().get("id")
    c.send("<presence/>")
    return c, token


def ack_all(c):
    """Ack everything received, and make sure the server has processed it."""
    c.send(f"<a xmlns='{NS_SM}' h='{c.handled}'/>")
    sync(c)
    c.send(f"<a xmlns='{NS_SM}' h='{c.handled}'/>")
    c.send(f"<r xmlns='{NS_SM}'/>")
    while c.next().tag != f"{{{NS_SM}}}a":
        pass


def wait_log(server, pattern, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, server.log()):
            return
        time.sleep(0.05)
    pytest.fail(f"{pattern!r} not in the log\n{server.log()[-3000:]}")


def test_hibernated_session_gets_one_notification_per_hibernation(server, connect):
    app = app_server(connect)
    romeo = login(connect, "montague")
    juliet, token = sm_login(connect, "capulet")
    enable(juliet)
    send_message(romeo, "capulet@localhost", "while online")
    while juliet.next().tag != f"{C}message":
        pass
    assert publishes(app, 0.5) == []                  # a live session: nothing to wake
    ack_all(juliet)
    juliet.drop()
    wait_log(server, r"capulet@localhost/phone detached")
    assert publishes(app, 0.3) == []                  # nothing important was left unacked
    for i in range(3):
        send_message(romeo, "capulet@localhost", f"while away {i}", f"a{i}")
    sync(romeo)
    romeo.nothing()                                   # queued for the session, no bounce
    got = publishes(app, 2.5)
    assert len(got) == 1, [ET.tostring(g) for g in got]
    form, publish, _ = summary(got[0])
    assert publish.get("node") == "node-1"
    assert 1 <= int(form["message-count"][0]) <= 3      # those counted by the time it is sent
    assert form["last-message-sender"] == ["montague@localhost"]

    again = connect(SMClient)
    again.authenticate("capulet")
    again.send(f"<resume xmlns='{NS_SM}' previd='{token}' h='{juliet.handled}'/>")
    assert again.next().tag == f"{{{NS_SM}}}resumed"
    again.handled, again.counting = juliet.handled, True
    bodies = []
    while len(bodies) < 3:
        el = again.next()
        if el.tag == f"{C}message":
            bodies.append(el.findtext(f"{C}body"))
    assert bodies == [f"while away {i}" for i in range(3)]
    ack_all(again)
    # A new hibernation, with an important stanza left unacked: notified at once.
    send_message(romeo, "capulet@localhost", "unacked")
    while again.next().tag != f"{C}message":
        pass
    time.sleep(1.1)                                   # push_min_interval
    again.drop()
    got = publishes(app, 1.5)
    assert len(got) == 1 and summary(got[0])[0]["message-count"] == ["1"]
    send_message(romeo, "capulet@localhost", "more", "m9")
    assert publishes(app, 1.5) == []                  # one per hibernation


def test_messages_to_an_account_with_only_hibernated_sessions(server, connect):
    """A registration that no hibernated session owns is notified for each such message."""
    app = app_server(connect)
    romeo = login(connect, "benvolio")
    tablet = login(connect, "rosaline", "tablet")
    enable(tablet, node="tablet-node")                # the tablet's own registration
    bye(tablet)
    bot = login(connect, "rosaline", "bot")           # connected, never available: asleep too
    phone, _ = sm_login(connect, "rosaline")          # hibernates without enabling push
    ack_all(phone)
    phone.drop()
    wait_log(server, r"rosaline@localhost/phone detached")
    send_message(romeo, "rosaline@localhost", "hello")
    got = publishes(app)
    assert [summary(p)[1].get("node") for p in got] == ["tablet-node"]


# -- rate limit, App Server errors --------------------------------------------------------

def test_bursts_are_coalesced(server, connect):
    app = app_server(connect)
    c = login(connect, "bursty")
    enable(c)
    bye(c)
    sender = login(connect, "burster")
    for i in range(5):
        send_message(sender, "bursty@localhost", f"b{i}", f"b{i}")
    got = publishes(app, 2.5)
    assert len(got) == 2, [ET.tostring(g) for g in got]       # one now, one after the interval
    assert summary(got[0])[0]["message-count"] == ["1"]
    assert summary(got[1])[0]["message-count"] == ["5"]


def refuse(app, iq, etype, condition):
    app.send(f"<iq type='error' id='{iq.get('id')}' from='{iq.get('to')}' to='{iq.get('from')}'>"
             f"<error type='{etype}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
             "</error></iq>")


def test_app_server_errors(server, connect):
    app = app_server(connect)
    c = login(connect, "errs")
    enable(c)
    bye(c)
    sender = login(connect, "err-sender")
    mallory = login(connect, "mallory")
    send_message(sender, "errs@localhost", "1", "e1")
    (iq,) = publishes(app, 1.0)
    # someone else answering in the App Server's name changes nothing
    mallory.send(f"<iq type='error' id='{iq.get('id')}' to='errs@localhost'><error type='cancel'>"
                 "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    sync(mallory)
    refuse(app, iq, "wait", "resource-constraint")   # a temporary error keeps it
    time.sleep(1.1)
    send_message(sender, "errs@localhost", "2", "e2")
    (iq,) = publishes(app, 1.0)
    refuse(app, iq, "cancel", "item-not-found")       # §7: gone for good
    wait_log(server, r"push: App Server push.localhost refused a notification for errs")
    time.sleep(1.1)
    send_message(sender, "errs@localhost", "3", "e3")
    assert publishes(app, 1.5) == []


def test_no_publish_to_a_disconnected_app_server(server, connect):
    """The server's own service-unavailable for a gone component must not disable anything."""
    c = login(connect, "patient")
    enable(c, jid="other.localhost", node="n")
    bye(c)
    sender = login(connect, "impatient")
    send_message(sender, "patient@localhost", "x")
    wait_log(server, r"App Server other.localhost is not connected; patient not notified")
    other = app_server(connect, "other.localhost", "other-secret")
    time.sleep(1.1)
    send_message(sender, "patient@localhost", "y", "m2")
    (iq,) = publishes(other, 1.0)
    assert summary(iq)[0]["message-count"] == ["2"]


# -- refusals and hostile input ----------------------------------------------------------

@pytest.mark.parametrize("xml, expected", [
    (f"<enable xmlns='{NS}' node='n'/>", ("modify", "bad-request")),
    (f"<enable xmlns='{NS}' jid='{APP}'/>", ("modify", "bad-request")),
    (f"<enable xmlns='{NS}' jid='a@b@c' node='n'/>", ("modify", "jid-malformed")),
    (f"<enable xmlns='{NS}' jid='push.example.net' node='n'/>", ("cancel", "remote-server-not-found")),
    (f"<enable xmlns='{NS}' jid='app@example.org/x' node='n'/>", ("cancel", "remote-server-not-found")),
    (f"<enable xmlns='{NS}' jid='pushbot@localhost' node='n'/>", ("modify", "not-acceptable")),
    (f"<enable xmlns='{NS}' jid='localhost' node='n'/>", ("modify", "not-acceptable")),
    (f"<enable xmlns='{NS}' jid='conference.localhost' node='n'/>", ("cancel", "not-acceptable")),
    (f"<enable xmlns='{NS}' jid='{APP}' node='{'n' * 1025}'/>", ("modify", "not-acceptable")),
    (f"<enable xmlns='{NS}' jid='{APP}' node='n'><x xmlns='{XD}' type='form'/></enable>",
     ("modify", "bad-request")),
    (f"<enable xmlns='{NS}' jid='{APP}' node='n'><x xmlns='{XD}' type='submit'>"
     "<field var='FORM_TYPE'><value>urn:x:other</value></field></x></enable>",
     ("modify", "bad-request")),
    (f"<enable xmlns='{NS}' jid='{APP}' node='n'><x xmlns='{XD}' type='submit'>"
     + "".join(f"<field var='f{i}'><value>v</value></field>" for i in range(17))
     + "</x></enable>", ("modify", "not-acceptable")),
    (f"<enable xmlns='{NS}' jid='{APP}' node='n'><x xmlns='{XD}' type='submit'>"
     f"<field var='big'><value>{'v' * 5000}</value></field></x></enable>",
     ("modify", "not-acceptable")),
    (f"<enable xmlns='{NS}' jid='{APP}' node='n'><x xmlns='{XD}' type='submit'/>"
     f"<x xmlns='{XD}' type='submit'/></enable>", ("modify", "bad-request")),
    (f"<disable xmlns='{NS}'/>", ("modify", "bad-request")),
    (f"<unknown xmlns='{NS}'/>", ("modify", "bad-request")),
])
def test_bad_requests_are_refused(server, connect, xml, expected):
    c = login(connect, "hostile")
    el = answer(c, f"<iq type='set' id='h1'>{xml}</iq>", "h1")
    assert el.get("type") == "error" and stanza_error(el) == expected, ET.tostring(el)


def test_only_the_account_itself(server, connect):
    victim = login(connect, "victim")
    mallory = login(connect, "mallory2")
    for to in ("victim@localhost", "localhost"):
        el = answer(mallory, enable_xml(to=to, iq_id="x1"), "x1")
        assert stanza_error(el) == ("auth", "forbidden"), ET.tostring(el)
    el = answer(mallory, f"<iq type='get' id='g1'><enable xmlns='{NS}' jid='{APP}' node='n'/></iq>",
                "g1")
    assert stanza_error(el)[1] == "bad-request"
    # a component (even the App Server) cannot register for a user either
    app = app_server(connect)
    app.send(f"<iq type='set' id='c1' from='{APP}' to='victim@localhost'>"
             f"<enable xmlns='{NS}' jid='{APP}' node='n'/></iq>")
    el = app.next()
    assert el.get("type") == "error" and el.find(f"{CA}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}forbidden") is not None
    bye(victim)
    sender = login(connect, "victim-sender")
    send_message(sender, "victim@localhost", "x")
    assert publishes(app, 1.0) == []                  # nothing was registered


def test_registrations_are_bounded_oldest_replaced(server, connect):
    app = app_server(connect)
    c = login(connect, "many")
    for i in range(5):                                # push_max_registrations = 3
        enable(c, node=f"n{i}", iq_id=f"e{i}")
    enable(c, node="n3", iq_id="again")               # re-enabling the same one: no growth
    bye(c)
    sender = login(connect, "many-sender")
    send_message(sender, "many@localhost", "x")
    got = publishes(app)
    assert sorted(summary(p)[1].get("node") for p in got) == ["n2", "n3", "n4"]


def test_local_account_app_server_and_body_after_reload(server, connect):
    """A local account's full JID as App Server; push_include_body turned on by SIGHUP."""
    bot = login(connect, "pushbot", "svc")
    c = login(connect, "reader")
    enable(c, jid="pushbot@localhost/svc", node="local")
    bye(c)
    cfg = server.data_dir / "xmppd.toml"
    cfg.write_text(CONFIG.replace("push_min_interval = 1\n",
                                  "push_min_interval = 1\npush_include_body = true\n"))
    server.proc.send_signal(signal.SIGHUP)
    wait_log(server, r"reloaded configuration .*push_include_body")
    sender = login(connect, "writer")
    long_body = "é" * 300
    send_message(sender, "reader@localhost", long_body)
    el = bot.next()
    assert el.tag == f"{C}iq" and el.get("from") == "reader@localhost"
    x = el.find(f"{{{PS}}}pubsub/{{{PS}}}publish/{{{PS}}}item/{{{NS}}}notification/{{{XD}}}x")
    assert fields(x)["last-message-body"] == ["é" * 256]
    bot.send(f"<iq type='result' id='{el.get('id')}' to='reader@localhost'/>")
    cfg.write_text(CONFIG)
    server.proc.send_signal(signal.SIGHUP)
    wait_log(server, r"reloaded configuration \(#2\)")


# -- durability ---------------------------------------------------------------------------

def test_registration_survives_kill_and_goes_with_the_account(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "xmppd.toml").write_text(CONFIG)
    args = ["--c2s-port", "0", "--http-port", "0", "--data-dir", str(data), "--insecure-auth",
            "--config", str(data / "xmppd.toml")]

    def start():
        s = XmppdServer(args, data).wait_listening()
        s.component_port = component_port(s)
        return s

    server = start()
    made = []

    def connect(kind=Raw):
        k = kind(server.component_port if kind is RawComponent else server.port)
        made.append(k)
        return k
    try:
        c = login(connect, "durable")
        enable(c)
        bye(c)
        server.proc.kill()                   # kill -9: an acknowledged enable is on disk
        server.proc.wait(5)
        server = start()
        app = app_server(connect)
        sender = login(connect, "sender")
        send_message(sender, "durable@localhost", "after restart")
        (iq,) = publishes(app, 1.5)
        assert summary(iq)[1].get("node") == "node-1"
        server.stop()
        assert ctl(data, "deluser", "durable").returncode == 0
        server = start()
        app = app_server(connect)
        bye(login(connect, "durable"))       # a new account of the same name
        sender = login(connect, "sender")
        send_message(sender, "durable@localhost", "new account")
        assert publishes(app, 1.5) == []
    finally:
        for k in made:
            k.close()
        server.stop()
