"""Random stanzas and random bytes into real c2s streams (in process, StringTransport).

Whatever arrives, the server answers with stanza or stream errors: no
exception is logged, every byte written is well-formed XML, and the session
either stays usable or is closed with a stream error.
"""
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from xmppd.config import Config
from xmppd.router import Router
from xmppd import services
from xmppd.storage import open_storage
from xmppd.transports import tcp

HEADER = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          b"to='localhost' version='1.0'>")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = Config(data_dir=str(tmp_path_factory.mktemp("fuzz")), preauth_timeout=0)
    store = open_storage(cfg)
    router = Router(cfg)
    services.install(router, cfg, store)
    _, svc = tcp.build(cfg, router, store)
    failures = []

    def observer(event):
        if event.get("log_failure") is not None:
            failures.append(event)
    globalLogPublisher.addObserver(observer)
    yield router, svc, failures
    globalLogPublisher.removeObserver(observer)
    for xs in list(svc.streams):
        xs.connectionLost(None)
    store.db.close()


def new_session(svc, user, resource, bind=True):
    xs = svc.factory.buildProtocol(None)
    t = StringTransport()
    xs.makeConnection(t)
    if bind:
        xs.session.bind(user, f"{user}@localhost", resource)
        xs.dataReceived(HEADER)
    t.clear()
    return xs, t


def check_output(data):
    """Everything written must be well-formed within a jabber:client stream."""
    data = data.replace(b"</stream:stream>", b"").replace(b"<?xml version='1.0'?>", b"")
    data = re.sub(rb"<stream:stream [^>]*>", b"", data)   # our (unclosed) stream headers
    ET.fromstring(b"<stream:stream xmlns='jabber:client' "
                  b"xmlns:stream='http://etherx.jabber.org/streams'>" + data
                  + b"</stream:stream>")


jids = st.sampled_from(["", "localhost", "peer@localhost", "peer@localhost/r", "peer@localhost/x",
                        "fz@localhost", "fz@localhost/me", "nobody@localhost", "conference.localhost",
                        "room@conference.localhost/nick", "x@example.org", "a@b@c", "@x", "x/", "..",
                        "u@localhost/" + "r" * 1100, "\u2126@localhost"])
types = st.sampled_from([None, "get", "set", "result", "error", "chat", "normal", "groupchat",
                         "headline", "unavailable", "subscribe", "probe", "bogus"])
payloads = st.sampled_from(["", "<body>hi &amp; bye</body>", "<ping xmlns='urn:xmpp:ping'/>",
                            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
                            "<query xmlns='http://jabber.org/protocol/disco#items' node='n'/>",
                            "<query xmlns='jabber:iq:roster'><item jid='a@b'/></query>",
                            "<query xmlns='jabber:iq:version'/>", "<priority>x</priority>",
                            "<priority>9999</priority>", "<a xmlns='urn:a'/><b xmlns='urn:b'/>",
                            "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>",
                            "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>",
                            "<x xmlns='http://jabber.org/protocol/muc'/>"])


@st.composite
def stanzas(draw):
    name = draw(st.sampled_from(["message", "presence", "iq", "iq", "foo"]))
    attrs = ""
    to = draw(jids)
    if to:
        attrs += f" to='{to}'"
    t = draw(types)
    if t:
        attrs += f" type='{t}'"
    if draw(st.booleans()):
        attrs += " id='i1'"
    if draw(st.booleans()):
        attrs += " from='forged@localhost/evil'"
    return f"<{name}{attrs}>{draw(payloads)}</{name}>"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(stanzas(), min_size=1, max_size=6))
def test_random_stanzas_after_bind(world, batch):
    router, svc, failures = world
    me, tme = new_session(svc, "fz", "me")
    peer, tpeer = new_session(svc, "peer", "r")
    peer.dataReceived(b"<presence/>")
    for s in batch:
        me.dataReceived(s.encode())
    check_output(tme.value())
    check_output(tpeer.value())
    assert not failures, failures[0]
    for xs in (me, peer):
        xs.connectionLost(None)
    assert router.sessions.get("fz@localhost/me") is None


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_before_and_after_the_header(world, junk, header_first):
    router, svc, failures = world
    xs, t = new_session(svc, "raw", "r", bind=False)
    if header_first:
        xs.dataReceived(HEADER)
    xs.dataReceived(junk)
    check_output(t.value())
    assert not failures, failures[0]
    xs.connectionLost(None)
