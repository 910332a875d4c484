"""Router.route_many (MUC fan-out) and the session registry, in process.

Real TCP transports on StringTransports carry bound sessions, so what
is checked is the exact bytes each client would receive.
"""
import xml.etree.ElementTree as ET

import pytest
from twisted.internet.testing import StringTransport
from twisted.words.xish import domish

from xmppd.config import Config
from xmppd.router import Router
from xmppd.storage import open_storage
from xmppd.transports import tcp


@pytest.fixture
def world(tmp_path):
    cfg = Config(data_dir=str(tmp_path), preauth_timeout=0)
    store = open_storage(cfg)
    router = Router(cfg)
    _, svc = tcp.build(cfg, router, store)
    yield cfg, router, svc
    for xs in list(svc.streams):
        xs.connectionLost(None)
    store.db.close()


def bound_session(svc, user, resource):
    xs = svc.factory.buildProtocol(None)
    t = StringTransport()
    xs.makeConnection(t)
    xs.session.bind(user, f"{user}@localhost", resource)
    t.clear()
    return xs, t


def parse_all(data):
    root = ET.fromstring(b"<root xmlns='jabber:client'>" + data + b"</root>")
    return list(root)


def test_route_many_patches_to_per_recipient_and_escapes(world):
    cfg, router, svc = world
    a, ta = bound_session(svc, "alice", "home")
    b, tb = bound_session(svc, "bob", "o'neil & <co>")
    msg = domish.Element((None, "message"))
    msg["from"] = "room@conference.localhost/nick"
    msg["type"] = "groupchat"
    msg.addElement("body", content="a & b < c")
    router.route_many(msg, [a.session.full, b.session.full, "ghost@localhost/none"])
    (ea,) = parse_all(ta.value())
    (eb,) = parse_all(tb.value())
    assert ea.get("to") == "alice@localhost/home"
    assert eb.get("to") == "bob@localhost/o'neil & <co>"
    for e in (ea, eb):
        assert e.get("from") == "room@conference.localhost/nick"
        assert e.find("{jabber:client}body").text == "a & b < c"
    assert b"xmlns" not in ta.value()   # jabber:client is the stream default
    assert "to" not in msg.attributes    # the placeholder does not leak into the element


def test_registry_replacement_and_removal(world):
    cfg, router, svc = world
    s1, t1 = bound_session(svc, "carol", "x")
    assert router.sessions.get("carol@localhost/x") is s1.session
    s2, t2 = bound_session(svc, "carol", "x")   # replaces s1 with a conflict stream error
    session2 = s2.session
    assert router.sessions.get("carol@localhost/x") is session2
    assert b"<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in t1.value()
    s1.connectionLost(None)                     # the old stream ending must not unbind s2
    assert router.sessions.get("carol@localhost/x") is session2
    assert list(router.sessions.resources("carol@localhost")) == ["x"]
    s2.connectionLost(None)
    assert router.sessions.get("carol@localhost/x") is None
    assert "carol@localhost" not in router.sessions.bare
    assert len(router.sessions) == 0


def test_exception_in_one_stanza_answers_internal_server_error_and_continues(world):
    cfg, router, svc = world
    a, ta = bound_session(svc, "dave", "r")

    def broken(iq, child, target):
        raise RuntimeError("boom")
    router.iq_handlers["urn:example:broken"] = broken
    a.dataReceived(b"<stream:stream xmlns='jabber:client' "
                   b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    ta.clear()
    a.dataReceived(b"<iq type='get' id='x1' to='localhost'><q xmlns='urn:example:broken'/></iq>"
                   b"<iq type='get' id='x2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    router.iq_handlers["urn:xmpp:ping"] = lambda iq, child, target: None
    a.dataReceived(b"<iq type='get' id='x3' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    out = parse_all(ta.value())
    assert [(e.get("id"), e.get("type")) for e in out] == [
        ("x1", "error"), ("x2", "error"), ("x3", "result")]
    assert out[0].find("{jabber:client}error/"
                       "{urn:ietf:params:xml:ns:xmpp-stanzas}internal-server-error") is not None
    assert out[1].find("{jabber:client}error/"
                       "{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
