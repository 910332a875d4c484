"""The server's own IQ services: disco, ping, version, roster, session, unknown IQs."""
import pytest

from test_c2s_raw import Raw, dev_server, stanza_error  # noqa: F401  (module fixture)

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"


@pytest.fixture
def client(dev_server):
    c = Raw(dev_server.port)
    c.login("svc")
    yield c
    c.close()


def ask(c, payload, to="localhost", type="get", id="q"):
    to_attr = f" to='{to}'" if to else ""
    c.send(f"<iq type='{type}' id='{id}'{to_attr}>{payload}</iq>")
    el = c.next()
    assert el.get("id") == id
    return el


def test_disco_info_of_the_server(client):
    el = ask(client, f"<query xmlns='{INFO}'/>")
    assert el.get("type") == "result" and el.get("from") == "localhost"
    q = el.find(f"{{{INFO}}}query")
    ident = q.find(f"{{{INFO}}}identity")
    assert (ident.get("category"), ident.get("type")) == ("server", "im")
    features = {f.get("var") for f in q.findall(f"{{{INFO}}}feature")}
    assert {INFO, ITEMS, "urn:xmpp:ping", "jabber:iq:version"} <= features


def test_disco_items_list_the_conference_and_upload_services(client):
    el = ask(client, f"<query xmlns='{ITEMS}'/>")
    items = [i.get("jid") for i in el.find(f"{{{ITEMS}}}query")]
    assert items == ["conference.localhost", "upload.localhost"]


def test_disco_unknown_node_and_set(client):
    el = ask(client, f"<query xmlns='{INFO}' node='urn:nope'/>")
    assert stanza_error(el) == ("cancel", "item-not-found")
    el = ask(client, f"<query xmlns='{INFO}'/>", type="set")
    assert stanza_error(el) == ("modify", "bad-request")


def test_ping_server(client):
    el = ask(client, "<ping xmlns='urn:xmpp:ping'/>")
    assert el.get("type") == "result" and el.get("to") == client.full and len(el) == 0


def test_version(client):
    el = ask(client, "<query xmlns='jabber:iq:version'/>")
    q = el.find("{jabber:iq:version}query")
    assert q.find("{jabber:iq:version}name").text == "xmppd"
    assert q.find("{jabber:iq:version}version").text
    el = ask(client, "<query xmlns='jabber:iq:version'/>", to="svc@localhost")
    assert stanza_error(el) == ("cancel", "service-unavailable")


def test_roster_get_empty_and_set_refused(client):
    el = ask(client, "<query xmlns='jabber:iq:roster'/>", to=None)
    assert el.get("type") == "result" and el.get("from") is None
    assert len(el.find("{jabber:iq:roster}query")) == 0
    el = ask(client, "<query xmlns='jabber:iq:roster'><item jid='x@localhost'/></query>",
             to=None, type="set")
    assert el.get("type") == "error"
    assert stanza_error(el) == ("cancel", "not-allowed")
    el = ask(client, "<query xmlns='jabber:iq:roster'/>", to="someone-else@localhost")
    assert stanza_error(el) in (("auth", "forbidden"), ("cancel", "service-unavailable"))


def test_session_iq(client):
    el = ask(client, "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>", to=None, type="set")
    assert el.get("type") == "result"


@pytest.mark.parametrize("to", ["localhost", None, "svc@localhost"])
@pytest.mark.parametrize("type", ["get", "set"])
def test_unknown_iq_is_service_unavailable(client, to, type):
    el = ask(client, "<query xmlns='urn:example:unknown'/>", to=to, type=type)
    assert stanza_error(el) == ("cancel", "service-unavailable")


def test_iq_with_two_payloads_is_bad_request(client):
    el = ask(client, "<ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/>")
    assert stanza_error(el) == ("modify", "bad-request")
