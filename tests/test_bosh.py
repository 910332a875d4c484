"""XMPP over BOSH (XEP-0124/0206) at /http-bind, through full sessions over plain HTTP.

A BOSH client here is a few lines over http.client (the protocol is HTTP POSTs of <body/>):
session creation, SASL, restart, bind, chat with a slixmpp user on TCP, a held request that
times out empty and one answered by an incoming message, the same rid sent again (replay),
a rid out of the window, terminate, and a room.
"""
import asyncio
import base64
import time
import http.client
import ssl
import threading
import xml.etree.ElementTree as ET

import slixmpp

BIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
CLIENT = "{jabber:client}"


def http_port(server):
    return int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))


class Bosh:
    def __init__(self, port):
        self.port = port
        self.rid = 4_000_000
        self.sid = None

    def post(self, xml, timeout=20):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request("POST", "/http-bind", xml.encode(), {"Content-Type": "text/xml; charset=utf-8"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def body(self, payload="", rid=None, **attrs):
        if rid is None:
            self.rid += 1
            rid = self.rid
        extra = "".join(f" {k.replace('_', ':')}='{v}'" for k, v in attrs.items())
        sid = f" sid='{self.sid}'" if self.sid else ""
        return (f"<body xmlns='{BIND}' xmlns:xmpp='{XBOSH}' rid='{rid}'{sid}{extra}>"
                f"{payload}</body>")

    def send(self, payload="", **attrs):
        status, data = self.post(self.body(payload, **attrs))
        assert status == 200, (status, data)
        return ET.fromstring(data)

    def login(self, user):
        r = self.send(to="localhost", wait="2", hold="1", xmpp_version="1.0",
                      **{"xml:lang": "en"})
        self.sid = r.get("sid")
        assert self.sid and r.get("requests") == "2" and r.get("wait") == "2"
        assert r.get("{%s}version" % XBOSH) == "1.0"
        mechs = [m.text for m in r.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
        assert "PLAIN" in mechs
        token = base64.b64encode(f"\0{user}\0password".encode()).decode()
        r = self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        assert r.find("{urn:ietf:params:xml:ns:xmpp-sasl}success") is not None, ET.tostring(r)
        r = self.send(to="localhost", xmpp_restart="true")
        assert r.find("{http://etherx.jabber.org/streams}features/"
                      "{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None, ET.tostring(r)
        r = self.send("<iq xmlns='jabber:client' type='set' id='b'>"
                      "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>")
        jid = r.find(CLIENT + "iq/{urn:ietf:params:xml:ns:xmpp-bind}bind/"
                     "{urn:ietf:params:xml:ns:xmpp-bind}jid")
        assert jid is not None, ET.tostring(r)
        return jid.text


def slix(user):
    c = slixmpp.ClientXMPP(f"{user}@localhost/tcp", "password")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    c.enable_direct_tls = False
    return c


def test_bosh_full_session_with_timeout_replay_and_window(xmppd_server):
    port = http_port(xmppd_server)

    async def main():
        bob = slix("bob")
        inbox = asyncio.Queue()
        bob.add_event_handler("message", lambda m: inbox.put_nowait(m))
        bob.connect("127.0.0.1", xmppd_server.port)
        await bob.wait_until("session_start", timeout=10)
        bob.send_presence()
        b = Bosh(port)
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, b.login, "alice") == "alice@localhost/web"
        # a message out; nothing comes back within wait=2: the held request times out empty
        r = await loop.run_in_executor(None, b.send, "<presence xmlns='jabber:client'/>")
        assert r.find(CLIENT + "presence") is not None      # our own presence, as on TCP
        t0 = loop.time()
        r = await loop.run_in_executor(None, b.send,
                                       "<message xmlns='jabber:client' to='bob@localhost' type='chat'>"
                                       "<body>hi over BOSH</body></message>")
        assert loop.time() - t0 >= 1.5
        m = await asyncio.wait_for(inbox.get(), 10)
        assert m["body"] == "hi over BOSH" and m["from"].full == "alice@localhost/web"
        assert len(r) == 0 and r.get("type") is None          # the empty answer after 'wait'
        # the same rid again (the client lost the answer): the same answer again
        status, data = await loop.run_in_executor(None, b.post, b.body(rid=b.rid))
        assert status == 200 and ET.fromstring(data).tag == f"{{{BIND}}}body"
        # a held request is answered by an incoming message
        held = loop.run_in_executor(None, b.send)
        await asyncio.sleep(0.5)
        bob.send_message(mto="alice@localhost/web", mbody="hello back", mtype="chat")
        r = await asyncio.wait_for(held, 10)
        msg = r.find(CLIENT + "message")
        assert msg is not None and msg.find(CLIENT + "body").text == "hello back", ET.tostring(r)
        assert msg.get("from") == "bob@localhost/tcp"
        # a rid far beyond the window ends the session (XEP-0124 §14.3: item-not-found)
        status, data = await loop.run_in_executor(None, b.post, b.body(rid=b.rid + 100))
        r = ET.fromstring(data)
        assert r.get("type") == "terminate" and r.get("condition") == "item-not-found"
        status, data = await loop.run_in_executor(None, b.post, b.body())
        assert status == 404 and ET.fromstring(data).get("condition") == "item-not-found"
        bob.disconnect()
    asyncio.run(main())
    assert "Traceback" not in xmppd_server.log()


def test_bosh_room_and_terminate(xmppd_server):
    port = http_port(xmppd_server)
    b = Bosh(port)
    b.login("carol")
    got = list(b.send("<presence xmlns='jabber:client' to='bosh@conference.localhost/Carol'>"
                      "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x>"
                      "</presence>"))
    for _ in range(5):
        got += list(b.send())
        if any(e.tag == CLIENT + "message" and e.find(CLIENT + "subject") is not None for e in got):
            break
    codes = {s.get("code") for e in got for s in e.iter("{http://jabber.org/protocol/muc#user}status")}
    assert "110" in codes
    r = b.send("<message xmlns='jabber:client' to='bosh@conference.localhost' type='groupchat'>"
               "<body>posted over BOSH</body></message>")
    echoes = [e for e in list(r) + list(b.send()) if e.tag == CLIENT + "message"]
    assert echoes and echoes[0].find(CLIENT + "body").text == "posted over BOSH"
    r = b.send(type="terminate")
    assert r.get("type") == "terminate"
    status, data = b.post(b.body())
    assert status == 404
    xmppd_server.wait_for_log(r"bosh c\d+: session \w+ closed \(carol@localhost/web\)")


def test_bosh_bad_requests(xmppd_server):
    port = http_port(xmppd_server)
    b = Bosh(port)
    for bad in ("not xml", f"<body xmlns='{BIND}'/>", f"<other xmlns='{BIND}' rid='1'/>",
                f"<body xmlns='{BIND}' rid='x' to='localhost' xmpp:version='1.0' xmlns:xmpp='{XBOSH}'/>",
                f"<body xmlns='{BIND}' rid='1' sid='nope'/>"):
        status, data = b.post(bad)
        r = ET.fromstring(data)
        assert r.get("type") == "terminate" and r.get("condition") in ("bad-request", "item-not-found")
    # a body larger than the limit is refused before it is buffered
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("POST", "/http-bind")
    c.putheader("Content-Length", str(50 * 1024 * 1024))
    c.endheaders()
    r = c.getresponse()
    assert r.status == 400
    c.close()
    assert "Traceback" not in xmppd_server.log()


def test_bosh_request_sent_again_while_held_takes_its_place(xmppd_server):
    """A client whose connection broke while its request was held sends the same rid again."""
    port = http_port(xmppd_server)
    b = Bosh(port)
    b.login("dora")
    b.send("<presence xmlns='jabber:client'/>")
    rid = b.rid + 1
    b.rid = rid
    first = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    first.request("POST", "/http-bind", b.body(rid=rid).encode())
    first.sock.close()                  # the connection breaks while the request is held
    status, data = b.post(b.body(rid=rid))
    assert status == 200
    r = ET.fromstring(data)
    assert r.get("type") is None and len(r) == 0       # held, then answered empty after 'wait'
    r = b.send()                                         # and the session goes on
    assert r.get("type") is None


def test_trace_logs_each_stanza_once_on_one_line(xmppd_server_factory):
    """--trace over BOSH: the session logs what goes out, once, and a line break stays escaped."""
    server = xmppd_server_factory("--trace")
    b = Bosh(http_port(server))
    b.login("tracy")
    got = list(b.send("<message xmlns='jabber:client' to='tracy@localhost/web' id='ml'>"
                      "<body>line one\nline two</body></message>"))
    for _ in range(5):
        if any(e.tag == CLIENT + "message" for e in got):
            break
        got += list(b.send())
    b.send(type="terminate")
    server.wait_for_log(r"OUT <message[^\n]*line one\\nline two")
    out = [line for line in server.log().splitlines() if " OUT <message" in line]
    assert len(out) == 1, out


def test_read_rate_paces_a_flooding_bosh_client_without_dropping(xmppd_server_factory, tmp_path):
    """read_rate_limit holds BOSH requests back as it slows a TCP reader down: every request is
    answered, in order, just later; each costs at least 1 KiB so empty polls are paced too."""
    conf = tmp_path / "c.toml"
    conf.write_text("limits_exempt = []\nread_rate_limit = 4096\n")
    server = xmppd_server_factory("--config", conf)
    b = Bosh(http_port(server))
    b.login("flood")
    n = 24                                   # 24 KiB of budget at 4 KiB/s with an 8 KiB burst
    t0 = time.monotonic()
    seen = []
    for i in range(n):
        r = b.send(f"<iq xmlns='jabber:client' type='get' id='p{i}' to='localhost'>"
                   "<ping xmlns='urn:xmpp:ping'/></iq>")
        for _ in range(3):
            if any(e.tag == CLIENT + "iq" for e in r):
                break
            r = b.send()
        seen += [e.get("id") for e in r if e.tag == CLIENT + "iq" and e.get("type") == "result"]
    took = time.monotonic() - t0
    assert seen[:n] == [f"p{i}" for i in range(n)]
    assert took >= 2.5, f"{n} requests at 4096 B/s (1 KiB each, 8 KiB burst) took only {took:.2f}s"
