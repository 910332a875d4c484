"""A handler that raises answers internal-server-error, is logged with
context, and affects nothing else.

In-process (trial TestCase on the real reactor, real loopback sockets): the
faulty handlers are plugged in through the server's public extension points
(``router.iq_handlers``, ``router.routes``, MUC hooks), since no well-formed
input makes the shipped handlers raise (tests/test_fuzz.py looks for that).
"""
import base64

from twisted.internet import defer, protocol, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

import xmppd  # noqa: F401  (compat shim before wokkel)
from xmppd import config
from xmppd.server import build
from xmppd.stream.c2s import C2SService

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")


class Client(protocol.Protocol):
    def __init__(self):
        self.buf = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.buf += data

    def connectionLost(self, reason):
        self.lost.callback(None)

    @defer.inlineCallbacks
    def wait_for(self, needle, count=1, timeout=5.0):
        """Wait until ``needle`` occurs ``count`` times in everything received."""
        waited = 0.0
        while self.buf.count(needle) < count:
            if waited > timeout:
                raise AssertionError(f"{needle!r} x{count} not received: {self.buf[-800:]!r}")
            yield task.deferLater(reactor, 0.02, lambda: None)
            waited += 0.02

    def send(self, data):
        self.transport.write(data.encode() if isinstance(data, str) else data)


class Exploding:
    """A route whose delivery raises, as a broken component would."""

    def send(self, element):
        raise RuntimeError("component exploded")


def _boom(iq, child, target):
    raise ZeroDivisionError("handler exploded")


class HandlerExceptionTests(unittest.TestCase):

    @defer.inlineCallbacks
    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        cfg = config.load(None, {"data_dir": self.mktemp(), "c2s_port": 0, "insecure_auth": True})
        self.root = build(cfg)
        self.root.startService()
        self.router = self.root.router
        self.port = next(s for s in self.root if isinstance(s, C2SService)).port.getHost().port
        self.clients = []
        self.router.iq_handlers["urn:xmppd:test:boom"] = _boom
        self.router.routes["boom.localhost"] = Exploding()
        yield task.deferLater(reactor, 0, lambda: None)

    @defer.inlineCallbacks
    def tearDown(self):
        for c in self.clients:
            if c.transport.connected:
                c.transport.abortConnection()
        yield defer.DeferredList([c.lost for c in self.clients])
        yield self.root.stopService()

    @defer.inlineCallbacks
    def login(self, user):
        c = yield protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", self.port)
        self.clients.append(c)
        c.send(HEADER)
        yield c.wait_for(b"</stream:features>")
        c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
               + base64.b64encode(f"\0{user}\0pw".encode()).decode() + "</auth>")
        yield c.wait_for(b"<success")
        c.send(HEADER)
        yield c.wait_for(b"</stream:features>", 2)
        c.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<resource>r</resource></bind></iq>")
        yield c.wait_for(b"</bind>")
        return c

    @defer.inlineCallbacks
    def ping(self, c, ident):
        c.send(f"<iq type='get' id='{ident}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        yield c.wait_for(f"id='{ident}' type='result'".encode())

    def failures(self, needle):
        return [e for e in self.events if e.get("log_failure") is not None
                and needle in str(e.get("log_format", "")).format_map(_Fmt(e))]

    @defer.inlineCallbacks
    def assert_still_serving(self, c):
        yield self.ping(c, "same-session")
        other = yield self.login("bystander")
        yield self.ping(other, "other-session")
        self.assertFalse(self.root.router.sessions.get("bystander@localhost/r") is None)

    @defer.inlineCallbacks
    def test_server_iq_handler_exception(self):
        c = yield self.login("victim")
        c.send("<iq type='get' id='b1' to='localhost'><boom xmlns='urn:xmppd:test:boom'/></iq>")
        yield c.wait_for(b"<internal-server-error")
        self.assertIn(b"id='b1'", c.buf[c.buf.rindex(b"<iq"):])
        logged = self.failures("failed on an IQ from victim@localhost/r")
        self.assertEqual(len(logged), 1)
        self.assertIn("urn:xmppd:test:boom", logged[0]["log_format"].format_map(_Fmt(logged[0])))
        self.assertIsInstance(logged[0]["log_failure"].value, ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        yield self.assert_still_serving(c)

    @defer.inlineCallbacks
    def test_exception_while_routing_from_a_client(self):
        c = yield self.login("router-victim")
        c.send("<iq type='set' id='b2' to='boom.localhost'><query xmlns='urn:x'/></iq>")
        yield c.wait_for(b"<internal-server-error")
        c.send("<message to='boom.localhost'><body>x</body></message>")
        yield self.ping(c, "after-message")
        logged = self.failures("router-victim@localhost/r")
        self.assertEqual(len(logged), 2, [e["log_format"] for e in logged])
        text = logged[0]["log_format"].format_map(_Fmt(logged[0]))
        self.assertIn("boom.localhost", text)        # the offending stanza is in the log
        self.assertIsInstance(logged[0]["log_failure"].value, RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        yield self.assert_still_serving(c)

    @defer.inlineCallbacks
    def test_muc_hook_exception(self):
        muc = self.router.muc
        muc.hooks.add("muc-room-iq/urn:xmppd:test:boom",
                      lambda event: (_ for _ in ()).throw(KeyError("hook exploded")))
        c = yield self.login("muc-victim")
        c.send("<presence to='boomroom@conference.localhost/v'>"
               "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
        yield c.wait_for(b"<subject")
        c.send("<iq type='get' id='b3' to='boomroom@conference.localhost'>"
               "<boom xmlns='urn:xmppd:test:boom'/></iq>")
        yield c.wait_for(b"<internal-server-error")
        self.assertIn(b"id='b3'", c.buf[c.buf.rindex(b"<iq"):])
        logged = [e for e in self.events if e.get("log_failure") is not None
                  and isinstance(e["log_failure"].value, KeyError)]
        self.assertEqual(len(logged), 1)
        text = logged[0]["log_format"].format_map(_Fmt(logged[0]))
        self.assertIn("muc-victim@localhost/r", text)   # who
        self.assertIn("boomroom@conference.localhost", text)   # where
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        # the room still works for its occupant
        c.send("<message to='boomroom@conference.localhost' type='groupchat' id='g1'><body>ok</body>"
               "</message>")
        yield c.wait_for(b"id='g1'")
        yield self.assert_still_serving(c)


class _Fmt(dict):
    """format_map helper: fields of a log event, missing ones left visible."""

    def __init__(self, event):
        super().__init__(event)

    def __missing__(self, key):
        return "{" + key + "}"
