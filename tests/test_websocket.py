"""XMPP over WebSocket (RFC 7395) with a real WebSocket client library (autobahn's asyncio client).

A browser-style client logs in over /xmpp-websocket, chats with a slixmpp user on TCP and
joins a room; the framing rules (subprotocol, <open/>/<close/>, one element per message,
namespaces on every element) and the limits TCP enforces are checked on the way.
"""
import asyncio
import base64
import ssl
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN = f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
CLIENT = "{jabber:client}"


def http_port(server):
    return int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))


class WSClient(WebSocketClientProtocol):
    def onConnect(self, response):
        self.factory.protocol_chosen = response.protocol

    def onOpen(self):
        self.factory.opened.set_result(self)

    def onMessage(self, payload, isBinary):
        self.factory.queue.put_nowait(payload.decode())

    def onClose(self, wasClean, code, reason):
        self.factory.queue.put_nowait(None)
        if not self.factory.opened.done():
            self.factory.opened.set_exception(ConnectionError(reason))


class WS:
    """One WebSocket connection: send text, receive parsed messages."""

    @classmethod
    async def connect(cls, port, protocols=("xmpp",), origin=None):
        loop = asyncio.get_running_loop()
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/xmpp-websocket",
                                         protocols=list(protocols), origin=origin)
        factory.protocol = WSClient
        factory.queue = asyncio.Queue()
        factory.opened = loop.create_future()
        await loop.create_connection(factory, "127.0.0.1", port)
        self = cls()
        self.factory = factory
        self.proto = await asyncio.wait_for(factory.opened, 10)
        return self

    def send(self, text):
        self.proto.sendMessage(text.encode(), isBinary=False)

    async def recv_text(self, timeout=10):
        return await asyncio.wait_for(self.factory.queue.get(), timeout)

    async def recv(self, timeout=10):
        text = await self.recv_text(timeout)
        assert text is not None, "connection closed"
        return ET.fromstring(text)      # each message must stand alone, namespaces declared

    async def recv_until(self, pred, timeout=10):
        while True:
            el = await self.recv(timeout)
            if pred(el):
                return el

    async def closed(self, timeout=10):
        while True:
            text = await self.recv_text(timeout)
            if text is None:
                return

    async def login(self, user, resource):
        self.send(OPEN)
        opened = await self.recv()
        assert opened.tag == f"{{{FRAMING}}}open" and opened.get("from") == "localhost"
        features = await self.recv()
        assert features.tag == "{http://etherx.jabber.org/streams}features"
        mechs = [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
        assert "PLAIN" in mechs
        assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
        token = base64.b64encode(f"\0{user}\0password".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        assert (await self.recv()).tag == "{urn:ietf:params:xml:ns:xmpp-sasl}success"
        self.send(OPEN)
        assert (await self.recv()).tag == f"{{{FRAMING}}}open"
        features = await self.recv()
        assert features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
        self.send("<iq xmlns='jabber:client' type='set' id='b1'>"
                  "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        iq = await self.recv()
        assert iq.tag == CLIENT + "iq" and iq.get("type") == "result"
        return iq.find("{urn:ietf:params:xml:ns:xmpp-bind}bind/"
                       "{urn:ietf:params:xml:ns:xmpp-bind}jid").text

    def close(self):
        self.proto.sendClose()


def slix(user):
    c = slixmpp.ClientXMPP(f"{user}@localhost/tcp", "password")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    c.enable_direct_tls = False
    return c


def test_websocket_login_chat_and_room(xmppd_server):
    port = http_port(xmppd_server)

    async def main():
        bob = slix("bob")
        got = asyncio.get_running_loop().create_future()
        bob.add_event_handler("message", lambda m: not got.done() and got.set_result(m))
        bob.connect("127.0.0.1", xmppd_server.port)
        await bob.wait_until("session_start", timeout=10)
        bob.send_presence()
        ws = await WS.connect(port)
        assert ws.factory.protocol_chosen == "xmpp"
        jid = await ws.login("alice", "web")
        assert jid == "alice@localhost/web"
        ws.send("<presence xmlns='jabber:client'/>")
        ws.send("<message xmlns='jabber:client' to='bob@localhost' type='chat'>"
                "<body>hello from the browser</body></message>")
        m = await asyncio.wait_for(got, 10)
        assert m["body"] == "hello from the browser" and m["from"] == "alice@localhost/web"
        bob.send_message(mto="alice@localhost/web", mbody="hello from TCP", mtype="chat")
        reply = await ws.recv_until(lambda e: e.tag == CLIENT + "message")
        assert reply.find(CLIENT + "body").text == "hello from TCP"
        assert reply.get("from") == "bob@localhost/tcp"
        # join a room, get the self-presence (110) and the subject, post, get the echo
        ws.send("<presence xmlns='jabber:client' to='web@conference.localhost/Alice'>"
                "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>")
        pres = await ws.recv_until(lambda e: e.tag == CLIENT + "presence")
        codes = {s.get("code") for s in pres.iter("{http://jabber.org/protocol/muc#user}status")}
        assert "110" in codes
        await ws.recv_until(lambda e: e.tag == CLIENT + "message" and e.find(CLIENT + "subject") is not None)
        ws.send("<message xmlns='jabber:client' to='web@conference.localhost' type='groupchat'>"
                "<body>posted over WebSocket</body></message>")
        echo = await ws.recv_until(lambda e: e.tag == CLIENT + "message")
        assert echo.get("type") == "groupchat" and echo.get("from") == "web@conference.localhost/Alice"
        assert echo.find(CLIENT + "body").text == "posted over WebSocket"
        # <close/>: the server answers <close/> and closes the WebSocket
        ws.send(f"<close xmlns='{FRAMING}'/>")
        closing = await ws.recv()
        assert closing.tag == f"{{{FRAMING}}}close"
        await ws.closed()
        bob.disconnect()
    asyncio.run(main())
    assert "Traceback" not in xmppd_server.log()


def test_websocket_without_the_xmpp_subprotocol_is_refused(xmppd_server):
    port = http_port(xmppd_server)

    async def main():
        with pytest.raises(ConnectionError):
            await WS.connect(port, protocols=("chat",))
    asyncio.run(main())


def test_websocket_framing_errors(xmppd_server):
    port = http_port(xmppd_server)

    async def expect_error(messages, condition):
        ws = await WS.connect(port)
        for m in messages:
            ws.send(m)
        err = await ws.recv_until(lambda e: e.tag == "{http://etherx.jabber.org/streams}error")
        assert err.find(f"{{urn:ietf:params:xml:ns:xmpp-streams}}{condition}") is not None, ET.tostring(err)
        close = await ws.recv()
        assert close.tag == f"{{{FRAMING}}}close"
        await ws.closed()

    async def main():
        # two elements in one message; half an element; not XML; a stanza before <open/>
        await expect_error([OPEN, "<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>"],
                           "not-well-formed")
        await expect_error([OPEN, "<iq xmlns='jabber:client' type='get'>"], "not-well-formed")
        await expect_error([OPEN, "<<<"], "not-well-formed")
        await expect_error(["<presence xmlns='jabber:client'/>"], "not-authorized")
        await expect_error([f"<open xmlns='{FRAMING}' to='example.org' version='1.0'/>"], "host-unknown")
        # pre-auth size limit (max_preauth_size, 16 KiB by default) as on TCP
        await expect_error([OPEN, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                            + "A" * 20000 + "</auth>"], "policy-violation")
    asyncio.run(main())
    assert "Traceback" not in xmppd_server.log()


def test_xmppjs_logs_in_over_websocket_and_chats(xmppd_server):
    """xmpp.js (@xmpp/client) under node, service ws://.../xmpp-websocket."""
    import os
    from conftest import REPO_ROOT
    from tools import require_command, require_node_module
    node = require_command("node", "install Node.js >= 20")
    require_node_module("@xmpp/client")
    port = http_port(xmppd_server)
    script = r"""
import { client, xml } from "@xmpp/client";
const [port] = process.argv.slice(1);
const xmpp = client({ service: `ws://127.0.0.1:${port}/xmpp-websocket`, domain: "localhost",
                      username: "carol", password: "secret", resource: "js", timeout: 20000 });
xmpp.on("error", (err) => { console.error("ERROR", err.condition, err.message); process.exit(2); });
xmpp.on("stanza", (st) => {
  if (st.is("message") && st.getChildText("body") === "ping from TCP") {
    xmpp.send(xml("message", { to: st.attrs.from, type: "chat" }, xml("body", {}, "pong from xmpp.js")))
      .then(() => setTimeout(() => xmpp.stop().then(() => process.exit(0)), 300));
  }
});
xmpp.on("online", async (address) => {
  console.log("ONLINE", address.toString());
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { to: "dave@localhost/tcp", type: "chat" }, xml("body", {}, "hi from xmpp.js")));
});
xmpp.start().catch((e) => { console.error("START", e.message); process.exit(3); });
setTimeout(() => { console.error("TIMEOUT"); process.exit(4); }, 40000);
"""

    async def main():
        dave = slix("dave")
        inbox = asyncio.Queue()
        dave.add_event_handler("message", lambda m: inbox.put_nowait(m))
        dave.connect("127.0.0.1", xmppd_server.port)
        await dave.wait_until("session_start", timeout=10)
        proc = await asyncio.create_subprocess_exec(
            node, "--experimental-websocket", "--input-type=module", "-e", script, str(port),
            cwd=REPO_ROOT / "tests" / "js", env=dict(os.environ),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        m = await asyncio.wait_for(inbox.get(), 40)
        assert m["body"] == "hi from xmpp.js" and m["from"].full == "carol@localhost/js"
        dave.send_message(mto="carol@localhost/js", mbody="ping from TCP", mtype="chat")
        m = await asyncio.wait_for(inbox.get(), 20)
        assert m["body"] == "pong from xmpp.js"
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        # the server's side of carol's session, to diagnose a rare SM count mismatch at close
        carol = [line for line in xmppd_server.log().splitlines()
                 if "carol" in line or " sm:" in line][-40:]
        assert proc.returncode == 0, (out, err, carol)
        assert b"ONLINE carol@localhost/js" in out
        dave.disconnect()
    asyncio.run(main())
    xmppd_server.wait_for_log(r"ws c\d+: connection opened")


class RawWS:
    """A bare RFC 6455 client over a socket: it never answers the server's close frame."""

    def __init__(self, port):
        import os
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /xmpp-websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: xmpp\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(4096)
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def send(self, text):
        import os
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def frame(self):
        """(opcode, payload) of the next frame."""
        while True:
            if len(self.buf) >= 2:
                n, off = self.buf[1] & 0x7F, 2
                if n == 126:
                    n, off = int.from_bytes(self.buf[2:4], "big"), 4
                elif n == 127:
                    n, off = int.from_bytes(self.buf[2:10], "big"), 10
                if len(self.buf) >= off + n:
                    op, payload = self.buf[0] & 0x0F, self.buf[off:off + n]
                    self.buf = self.buf[off + n:]
                    return op, payload
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk

    def element(self):
        op, payload = self.frame()
        assert op == 1, (op, payload)
        return ET.fromstring(payload)

    def login(self, user, resource):
        self.send(OPEN)
        self.element(), self.element()                      # <open/>, features
        token = base64.b64encode(f"\0{user}\0password".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        assert self.element().tag.endswith("}success")
        self.send(OPEN)
        self.element(), self.element()
        self.send("<iq xmlns='jabber:client' type='set' id='b1'><bind "
                  f"xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource>"
                  "</bind></iq>")
        assert self.element().get("type") == "result"


def test_websocket_resource_leaves_routing_when_its_stream_closes(xmppd_server):
    """After <close/> the server answers <close/> and a close frame, then waits for the
    client's close frame (which never comes here). The resource is gone for routing at
    once: the account's other resource sees it leave and gets a chat sent to it
    (RFC 6121 §8.5.3.2.1), where it used to be dropped until the connection ended."""
    from test_c2s_raw import C, Raw
    port = http_port(xmppd_server)
    ws = RawWS(port)
    ws.login("wsclose", "web")
    ws.send("<presence xmlns='jabber:client'/>")
    other = Raw(xmppd_server.port)
    other.login("wsclose", resource="desk")
    other.send("<presence/>")
    sender = Raw(xmppd_server.port)
    sender.login("wssender")
    while True:                     # our own presence, then the web resource's
        el = other.next()
        if el.tag == f"{C}presence" and el.get("from") == "wsclose@localhost/web":
            break
    ws.send(f"<close xmlns='{FRAMING}'/>")
    while ws.element().tag != f"{{{FRAMING}}}close":   # presences of the other resource first
        pass
    assert ws.frame()[0] == 8                           # the close frame: left unanswered
    sender.send("<message to='wsclose@localhost/web' type='chat' id='late'><body>x</body></message>")
    el = other.next()
    assert el.tag == f"{C}presence" and el.get("type") == "unavailable", ET.tostring(el)
    assert el.get("from") == "wsclose@localhost/web"
    el = other.next()
    assert el.tag == f"{C}message" and el.get("id") == "late", ET.tostring(el)
    for c in (other, sender):
        c.close()
    ws.sock.close()
