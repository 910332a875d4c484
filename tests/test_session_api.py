"""The session/transport split: named session events, detach/attach, the transport hooks.

In process: real TCP transports on StringTransports, so what is checked is
the exact bytes a client would receive.
"""
import xml.etree.ElementTree as ET

import pytest
from twisted.internet.testing import StringTransport

from xmppd.config import Config
from xmppd.router import Router
from xmppd import services
from xmppd.session import EVENTS
from xmppd.storage import open_storage
from xmppd.transports import tcp

HEADER = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          b"to='localhost' version='1.0'>")


@pytest.fixture
def world(tmp_path):
    cfg = Config(data_dir=str(tmp_path), preauth_timeout=0, insecure_auth=True)
    store = open_storage(cfg)
    router = Router(cfg)
    services.install(router, cfg, store)
    manager, listener = tcp.build(cfg, router, store)
    yield manager, listener, router
    for xs in list(listener.streams):
        xs.connectionLost(None)
    store.db.close()


def connect(listener):
    xs = listener.factory.buildProtocol(None)
    t = StringTransport()
    xs.makeConnection(t)
    return xs, t


def bound(listener, user, resource):
    xs, t = connect(listener)
    xs.session.bind(user, f"{user}@localhost", resource)
    xs.dataReceived(HEADER)
    t.clear()
    return xs, t


def elements(data):
    return list(ET.fromstring(b"<r xmlns='jabber:client' xmlns:stream='x'>" + data + b"</r>"))


def test_events_are_known_names(world):
    manager, _, _ = world
    with pytest.raises(KeyError):
        manager.events.add("no-such-event", lambda s: None)
    assert "stanza-sending" in EVENTS and "nonza-received" in EVENTS


def test_stream_features_hook_adds_children(world):
    manager, listener, _ = world
    seen = []

    def features(session, parts):
        seen.append((session.authenticated, session.bound))
        if session.authenticated:
            parts.append("<sm xmlns='urn:xmpp:sm:3'/>")
    manager.events.add("stream-features", features)
    xs, t = connect(listener)
    xs.dataReceived(HEADER)
    assert b"<sm " not in t.value()
    xs.session.username = "alice"          # as after SASL success
    xs.restart()
    t.clear()
    xs.dataReceived(HEADER)
    assert b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>" in t.value()
    assert b"<sm xmlns='urn:xmpp:sm:3'/>" in t.value()
    assert seen == [(False, False), (True, False)]


def test_nonza_received_before_and_after_bind(world):
    manager, listener, _ = world
    got = []

    def nonza(session, el):
        if el.uri == "urn:xmpp:csi:0":
            got.append((session.bound, el.name))
            return True
    manager.events.add("nonza-received", nonza)
    xs, t = bound(listener, "alice", "r")
    xs.dataReceived(b"<inactive xmlns='urn:xmpp:csi:0'/>")
    assert got == [(True, "inactive")]
    assert not xs.closing
    xs.dataReceived(b"<other xmlns='urn:example'/>")      # nobody handles it: as before
    assert b"<unsupported-stanza-type" in t.value() and xs.closing


def test_stanza_received_can_consume_and_sending_can_hold(world):
    manager, listener, router = world
    counted, held = [], []
    manager.events.add("stanza-received", lambda s, el: counted.append(el.name) or None)
    manager.events.add("stanza-sending",
                       lambda s, data: held.append(data) or True if s.resource == "held" else None)
    a, ta = bound(listener, "alice", "r")
    b, tb = bound(listener, "bob", "held")
    a.dataReceived(b"<message to='bob@localhost/held' type='chat'><body>hi</body></message>")
    assert counted == ["message"]
    assert tb.value() == b"" and len(held) == 1 and b"<body>hi</body>" in held[0]
    b.session.send_raw(held.pop())      # a holder releases: written without the event again
    (m,) = elements(tb.value())
    assert m.get("from") == "alice@localhost/r" and not held


def test_bound_and_unbound_events(world):
    manager, listener, router = world
    log = []
    manager.events.add("session-bound", lambda s: log.append(("bound", s.full)))
    manager.events.add("session-unbound", lambda s: log.append(("unbound", s.full)))
    xs, t = connect(listener)
    xs.dataReceived(HEADER)
    xs.session.username = "carol"
    xs.restart()
    xs.dataReceived(HEADER)
    xs.dataReceived(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    b"<resource>desk</resource></bind></iq>")
    assert log == [("bound", "carol@localhost/desk")]
    xs.connectionLost(None)
    assert log[-1] == ("unbound", "carol@localhost/desk")
    assert router.sessions.get("carol@localhost/desk") is None


def test_session_outlives_its_transport_when_a_feature_keeps_it(world):
    manager, listener, router = world
    queued = []
    reasons = []
    manager.events.add("transport-lost", lambda s, reason: reasons.append(reason) or reason == "lost")
    manager.events.add("stanza-sending",
                       lambda s, data: queued.append(data) or True if s.transport is None else None)
    a, ta = bound(listener, "alice", "r")
    b, tb = bound(listener, "bob", "phone")
    session = b.session
    b.connectionLost(None)                          # the TCP connection dies
    assert session.transport is None and session.bound and reasons == ["lost"]
    assert router.sessions.get("bob@localhost/phone") is session
    a.dataReceived(b"<message to='bob@localhost/phone' type='chat'><body>1</body></message>")
    assert len(queued) == 1                          # a feature queues while detached
    b2, tb2 = connect(listener)                      # a new connection resumes it
    b2.dataReceived(HEADER)
    tb2.clear()
    fresh = b2.session
    session.attach(b2)
    assert b2.session is session and fresh.ended
    for data in queued:
        session.send_raw(data)
    a.dataReceived(b"<message to='bob@localhost/phone' type='chat'><body>2</body></message>")
    bodies = [m.find("{jabber:client}body").text for m in elements(tb2.value())]
    assert bodies == ["1", "2"]
    b2.dataReceived(b"<presence/>")                  # input reaches the resumed session
    assert session.available
    session.end()                                    # e.g. the resumption timeout
    assert router.sessions.get("bob@localhost/phone") is None


def test_transport_interface_basics(world):
    manager, listener, _ = world
    xs, t = connect(listener)
    assert xs.can_starttls and not xs.secure
    assert xs.tls_connection() is None
    assert xs.limited_ip == "192.168.1.1"            # StringTransport's peer: not exempt
    assert xs.session in manager.sessions
    xs.connectionLost(None)
    assert not manager.sessions


def test_transport_lost_tells_a_closed_stream_from_a_dropped_connection(world):
    manager, listener, router = world
    reasons = []
    manager.events.add("transport-lost", lambda s, reason: reasons.append(reason))
    a, _ = bound(listener, "alice", "r")
    a.dataReceived(b"</stream:stream>")                 # the client closes the stream
    a.connectionLost(None)
    b, _ = bound(listener, "bob", "r")
    b.session.close_with_error("policy-violation")     # we close it
    b.connectionLost(None)
    c, _ = bound(listener, "carol", "r")
    c.connectionLost(None)                              # the connection drops
    assert reasons == ["closed", "closed", "lost"]


def test_a_bound_method_handler_can_be_removed(world):
    """Features hook and unhook methods on demand (offline's hold, push, blocking); each
    ``self.method`` access is a new object, so removal must compare by equality, or every
    hook-unhook cycle would leave one more handler on the per-stanza path."""
    manager, _, router = world

    class Feature:
        def sending(self, session, data):
            return None

        def on_message(self, event):
            return None
    f = Feature()
    before = len(manager.events.stanza_sending)
    for _ in range(3):
        manager.events.add("stanza-sending", f.sending, priority=300)
        assert len(manager.events.stanza_sending) == before + 1
        manager.events.remove("stanza-sending", f.sending)
        assert len(manager.events.stanza_sending) == before
        router.hooks.add("client/message", f.on_message)
        router.hooks.remove("client/message", f.on_message)
    assert f.on_message not in [h[2] for h in router.hooks._handlers.get("client/message", ())]
