"""Routing between local sessions (RFC 6121 §8.5, roster-less) over real sockets."""
import time
import xml.etree.ElementTree as ET

import pytest

from test_c2s_raw import C, Raw, dev_server, stanza_error  # noqa: F401  (module fixture)

PING = "<ping xmlns='urn:xmpp:ping'/>"


@pytest.fixture
def login(dev_server):
    clients = []
    counter = iter(range(1000))

    def connect(user=None, resource="r", presence=None):
        c = Raw(dev_server.port)
        clients.append(c)
        c.login(user or f"u{next(counter)}x{id(clients) % 9973}", resource=resource)
        if presence is not None:
            c.send(presence)
            _sync(c)   # the presence (and its broadcast to own resources) is processed
        return c
    yield connect
    for c in clients:
        c.close()


def _sync(c):
    """Round-trip a ping to the server so everything sent before it has been processed.

    Presence that arrived meanwhile (own resources' broadcasts) is discarded.
    """
    c.send("<iq type='get' to='localhost' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        el = c.next()
        if el.tag != f"{C}presence":
            break
    assert el.get("id") == "sync", ET.tostring(el)


def _bare(c):
    return c.full.split("/")[0]


def test_forged_from_is_overwritten(login):
    a, b = login(), login()
    b.send(f"<message to='{a.full}' from='boss@localhost/x' type='chat'><body>hi</body></message>")
    el = a.next()
    assert el.get("from") == b.full


def test_message_without_to_goes_to_own_bare_jid(login):
    a = login(presence="<presence/>")
    _sync(a)
    a.send("<message type='chat' id='self'><body>note to self</body></message>")
    el = a.next()
    assert el.get("id") == "self" and el.get("to") == _bare(a) and el.get("from") == a.full


def test_chat_to_bare_goes_to_highest_priority_normal_to_all_non_negative(login):
    user = "prio"
    hi = login(user, "hi", presence="<presence><priority>5</priority></presence>")
    lo = login(user, "lo", presence="<presence><priority>1</priority></presence>")
    neg = login(user, "neg", presence="<presence><priority>-1</priority></presence>")
    sender = login()
    for c in (hi, lo, neg):
        _sync(c)
    sender.send(f"<message to='{user}@localhost' type='chat' id='c1'><body>x</body></message>")
    assert hi.next().get("id") == "c1"
    sender.send(f"<message to='{user}@localhost' type='normal' id='n1'><body>x</body></message>")
    assert hi.next().get("id") == "n1"
    assert lo.next().get("id") == "n1"
    sender.send(f"<message to='{user}@localhost' type='headline' id='h1'><body>x</body></message>")
    assert hi.next().get("id") == "h1"
    assert lo.next().get("id") == "h1"
    lo.nothing()
    neg.nothing()
    sender.nothing()


def test_message_to_bare_with_no_available_resource_is_stored_offline(login):
    target = login("unavail")  # connected but never sent presence
    sender = login()
    sender.send("<message to='unavail@localhost' type='chat' id='m1'><body>x</body></message>")
    sender.send("<message to='unavail@localhost' type='headline' id='m2'><body>x</body></message>")
    sender.nothing()
    target.nothing()
    target.send("<presence/>")  # initial presence: XEP-0160 delivery (tests/test_offline.py)
    el = target.next()
    while el.tag != f"{C}message":
        el = target.next()
    assert el.get("id") == "m1" and el.find("{urn:xmpp:delay}delay") is not None
    target.nothing()


def test_groupchat_to_bare_or_missing_full_jid_is_refused(login):
    target = login("gc", presence="<presence/>")
    sender = login()
    _sync(target)
    for to in ("gc@localhost", "gc@localhost/other"):
        sender.send(f"<message to='{to}' type='groupchat' id='g'><body>x</body></message>")
        assert stanza_error(sender.next()) == ("cancel", "service-unavailable")
    target.nothing()


def test_chat_to_missing_full_jid_falls_back_to_bare(login):
    target = login("fallback", "here", presence="<presence/>")
    sender = login()
    _sync(target)
    sender.send("<message to='fallback@localhost/gone' type='chat' id='f1'><body>x</body></message>")
    el = target.next()
    assert el.get("id") == "f1" and el.get("to") == "fallback@localhost/gone"
    sender.send("<message to='fallback@localhost/gone' type='headline' id='f2'><body>x</body></message>")
    target.nothing()
    sender.nothing()


def test_iq_to_missing_full_jid_is_service_unavailable(login):
    target = login("iqtarget", "here")
    sender = login()
    sender.send(f"<iq to='iqtarget@localhost/gone' type='get' id='i1'>{PING}</iq>")
    el = sender.next()
    assert el.get("from") == "iqtarget@localhost/gone" and el.get("id") == "i1"
    assert stanza_error(el) == ("cancel", "service-unavailable")
    target.nothing()


def test_iq_between_full_jids(login):
    a, b = login(), login()
    a.send(f"<iq to='{b.full}' type='get' id='p1'>{PING}</iq>")
    el = b.next()
    assert el.get("from") == a.full and el.get("type") == "get"
    b.send(f"<iq to='{a.full}' type='result' id='p1'/>")
    el = a.next()
    assert el.get("from") == b.full and el.get("type") == "result"


def test_iq_to_bare_jid_is_answered_by_the_server_for_the_account(login):
    target = login("onbehalf")
    sender = login()
    sender.send(f"<iq to='onbehalf@localhost' type='get' id='b1'>{PING}</iq>")
    el = sender.next()
    assert el.get("type") == "result" and el.get("from") == "onbehalf@localhost"
    sender.send("<iq to='onbehalf@localhost' type='get' id='b2'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    el = sender.next()
    ident = el.find("{http://jabber.org/protocol/disco#info}query/"
                    "{http://jabber.org/protocol/disco#info}identity")
    assert (ident.get("category"), ident.get("type")) == ("account", "registered")
    sender.send("<iq to='onbehalf@localhost' type='get' id='b3'><query xmlns='urn:x:unknown'/></iq>")
    assert stanza_error(sender.next()) == ("cancel", "service-unavailable")
    target.nothing()


def test_unknown_local_user(login):
    sender = login()
    sender.send("<message to='nobody-here@localhost' type='chat' id='u1'><body>x</body></message>")
    assert stanza_error(sender.next()) == ("cancel", "service-unavailable")
    sender.send(f"<iq to='nobody-here@localhost' type='get' id='u2'>{PING}</iq>")
    assert stanza_error(sender.next()) == ("cancel", "service-unavailable")
    sender.send(f"<iq to='nobody-here@localhost/res' type='get' id='u3'>{PING}</iq>")
    assert stanza_error(sender.next()) == ("cancel", "service-unavailable")
    sender.send("<presence to='nobody-here@localhost'/>")
    sender.send("<presence to='nobody-here@localhost' type='subscribe'/>")
    sender.nothing()


def test_error_stanzas_are_never_answered(login):
    sender = login()
    sender.send("<message to='nobody-here@localhost' type='error' id='e1'>"
                "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                "</error></message>")
    sender.send("<iq to='nobody-here@localhost/x' type='error' id='e2'>"
                "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                "</error></iq>")
    sender.send("<iq to='nobody-here@localhost/x' type='result' id='e3'/>")
    sender.send("<message to='example.org' type='error' id='e4'/>")
    sender.nothing()


def test_remote_domain_and_malformed_jid(login):
    sender = login()
    sender.send("<message to='someone@example.org' type='chat' id='r1'><body>x</body></message>")
    el = sender.next()
    assert el.get("id") == "r1" and stanza_error(el) == ("cancel", "remote-server-not-found")
    sender.send(f"<iq to='a@b@c..d' type='get' id='r2'>{PING}</iq>")
    el = sender.next()
    assert el.get("id") == "r2" and stanza_error(el) == ("modify", "jid-malformed")


def test_presence_to_bare_jid_reaches_available_resources(login):
    avail = login("presbare", "a", presence="<presence/>")
    idle = login("presbare", "b")  # connected, no initial presence
    sender = login()
    _sync(avail)
    sender.send("<presence to='presbare@localhost'/>")
    el = avail.next()
    assert el.tag == f"{C}presence" and el.get("from") == sender.full
    idle.nothing()


def test_subscription_requests_are_routed_from_the_bare_jid(login):
    target = login("subtarget", presence="<presence/>")
    sender = login()
    _sync(target)
    sender.send("<presence to='subtarget@localhost' type='subscribe'/>")
    el = target.next()
    assert el.get("type") == "subscribe" and el.get("from") == _bare(sender)
    # no state is kept: the roster stays empty
    sender.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    el = sender.next()
    assert len(el.find("{jabber:iq:roster}query")) == 0


@pytest.mark.parametrize("how", ["footer", "abrupt", "unavailable"])
def test_directed_presence_gets_unavailable_when_the_sender_leaves(login, how):
    watcher = login()
    leaver = login()
    other = login()
    leaver.send(f"<presence to='{watcher.full}'/>")
    assert watcher.next().get("from") == leaver.full
    leaver.send(f"<presence to='{other.full}'/>")
    assert other.next().get("from") == leaver.full
    leaver.send(f"<presence to='{other.full}' type='unavailable'/>")  # no longer directed
    assert other.next().get("type") == "unavailable"
    if how == "footer":
        leaver.send("</stream:stream>")
        leaver.wait_closed()
        leaver.close()
    elif how == "abrupt":
        leaver.close()
    else:
        leaver.send("<presence type='unavailable'><status>gone</status></presence>")
    el = watcher.next()
    assert el.tag == f"{C}presence" and el.get("type") == "unavailable"
    assert el.get("from") == leaver.full and el.get("to") == watcher.full
    other.nothing()


def test_resource_conflict_sends_unavailable_for_directed_presence(login):
    watcher = login()
    old = login("conflictor", "same")
    old.send(f"<presence to='{watcher.full}'/>")
    watcher.next()
    login("conflictor", "same")
    el = watcher.next()
    assert el.get("type") == "unavailable" and el.get("from") == "conflictor@localhost/same"



def test_resource_conflict_in_a_room_bind_result_comes_first(login):
    """A client reconnecting with the resource of a session that sat in a room (profanity and
    Gajim use a fixed one) gets its bind result first and none of the old session's leftovers:
    the room's unavailable reflection for the old session went to the new one, before the bind
    result, and libstrophe (profanity 0.13) dropped the stream on it."""
    room = "twinroom@conference.localhost"
    old = login("roomtwin", "same")
    old.send(f"<presence to='{room}/Twin'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    while old.next().find(f"{C}subject") is None:   # joined: presences, then the subject
        pass
    new = login("roomtwin", "same")       # Raw.login: the bind result is the first stanza
    assert old.stream_error() == "conflict"
    new.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    el = new.next()
    assert el.get("id") == "p1" and el.get("type") == "result", ET.tostring(el)

def test_stanzas_to_the_conference_domain_reach_the_muc_component(login):
    c = login()
    c.send("<iq to='conference.localhost' type='get' id='muc1'>"
           "<query xmlns='urn:example:nothing-handles-this'/></iq>")
    el = c.next()
    assert el.get("id") == "muc1" and el.get("from") == "conference.localhost"
    assert stanza_error(el)[1] in ("service-unavailable", "feature-not-implemented")


def test_undirected_presence_is_broadcast_to_own_resources_only(login):
    first = login("selfpres", "one")
    first.send("<presence><status>here</status></presence>")
    el = first.next()
    assert el.get("from") == first.full and el.find(f"{C}status").text == "here"
    stranger = login(presence="<presence/>")
    second = login("selfpres", "two")
    second.send("<presence/>")
    got = {second.next().get("from"), second.next().get("from")}
    assert got == {first.full, second.full}
    assert first.next().get("from") == second.full
    second.send("<presence type='unavailable'/>")
    el = first.next()
    assert el.get("type") == "unavailable" and el.get("from") == second.full
    second.close()
    _sync(first)
    third = login("selfpres", "three", presence="<presence/>")
    first.close()            # an available session that just disappears
    el = third.next()
    assert el.get("type") == "unavailable" and el.get("from") == "selfpres@localhost/one"
    stranger.nothing()


def test_stream_language_is_added_to_stanzas_without_one(dev_server, login):
    target = login()
    c = Raw(dev_server.port)
    try:
        c.open(extra=" xml:lang='fr'")
        c.starttls()   # this restart has no xml:lang: the declared one still counts
        c.auth("langy", "pw")
        c.open()
        c.bind("r")
        c.send(f"<message to='{target.full}' type='chat' id='l1'><body>bonjour</body></message>")
        c.send(f"<message to='{target.full}' type='chat' id='l2' xml:lang='de'><body>hallo</body></message>")
        lang = "{http://www.w3.org/XML/1998/namespace}lang"
        assert target.next().get(lang) == "fr"
        assert target.next().get(lang) == "de"
    finally:
        c.close()


def test_chat_to_a_resource_whose_stream_is_closing_reaches_the_account(login):
    """The client sent </stream:stream> but has not finished the TLS close: its resource is
    gone for routing at once (RFC 6121 §8.5.3.2.1: a chat to it goes to the account's other
    resource), not kept bound until the connection ends, where stanzas to it were dropped."""
    leaving = login("closer", "gone", presence="<presence/>")
    staying = login("closer", "here", presence="<presence/>")
    sender = login()
    _sync(leaving)
    leaving.send("</stream:stream>")
    while not leaving.footer:           # the server answered with its own footer...
        leaving._pump(time.monotonic() + 5)
    # ...and waits for our TLS close_notify, which never comes (the socket stays open)
    el = staying.next()
    assert el.tag == f"{C}presence" and el.get("type") == "unavailable", ET.tostring(el)
    assert el.get("from") == "closer@localhost/gone"
    sender.send("<message to='closer@localhost/gone' type='chat' id='late'><body>x</body></message>")
    el = staying.next()
    assert el.tag == f"{C}message" and el.get("id") == "late", ET.tostring(el)
    sender.nothing()


def test_message_to_a_closing_last_resource_is_stored_offline(login):
    leaving = login("closer2", "gone", presence="<presence/>")
    sender = login()
    _sync(leaving)
    leaving.send("</stream:stream>")
    while not leaving.footer:
        leaving._pump(time.monotonic() + 5)
    sender.send("<message to='closer2@localhost/gone' type='chat' id='kept'><body>x</body></message>")
    sender.nothing()
    back = login("closer2", "gone")
    back.send("<presence/>")
    el = back.next()
    while el.tag != f"{C}message":
        el = back.next()
    assert el.get("id") == "kept" and el.find("{urn:xmpp:delay}delay") is not None
