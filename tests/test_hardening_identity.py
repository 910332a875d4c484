"""Identity: a client can only ever speak as itself.

Forged 'from' on every stanza kind is replaced by the session's full JID
(bare JID for subscriptions); nobody can speak as another resource, the
server, a room or another occupant; JIDs are validated and normalised
wherever they enter (to, bind, MUC admin items, invites, nicks).
"""
import xml.etree.ElementTree as ET

import pytest

from test_c2s_raw import C, Raw, start_server
from test_hardening import (open_clients, NS_MUC_ADMIN, NS_MUC_USER, alive, by_id, create_instant_room,
                            error_condition, expect, iq, join, login)

MUC = "conference.localhost"

FORGED = [
    "mallory@localhost/x",          # another user
    "victim@localhost/other",       # another resource of the recipient
    "sender@localhost/elsewhere",   # another resource of the sender itself
    "localhost",                    # the server
    "conference.localhost",         # the MUC service
    f"room@{MUC}/Boss",             # a room occupant
    f"room@{MUC}",                  # a room
    "a..b",                         # malformed
    "",                             # empty
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth")
    yield srv
    srv.stop()


@pytest.fixture
def clients(server):
    yield from open_clients(server.port)


@pytest.mark.parametrize("forged", FORGED)
@pytest.mark.parametrize("kind", ["message", "presence", "iq", "iq-result", "subscribe"])
def test_forged_from_is_overwritten(server, clients, kind, forged):
    sender = clients("sender")
    victim = clients("victim")
    ident = f"{kind}-{len(forged)}"
    to = victim.full
    if kind == "message":
        sender.send(f"<message from='{forged}' to='{to}' type='chat' id='{ident}'><body>hi</body></message>")
        want = sender.full
    elif kind == "presence":
        sender.send(f"<presence from='{forged}' to='{to}' id='{ident}'/>")
        want = sender.full
    elif kind == "iq":
        sender.send(f"<iq from='{forged}' to='{to}' type='get' id='{ident}'><query xmlns='urn:x'/></iq>")
        want = sender.full
    elif kind == "iq-result":
        sender.send(f"<iq from='{forged}' to='{to}' type='result' id='{ident}'/>")
        want = sender.full
    else:
        victim.send("<presence/>")       # subscriptions go to available resources
        sender.send(f"<presence from='{forged}' to='victim@localhost' type='subscribe' id='{ident}'/>")
        want = "sender@localhost"
    el = expect(victim, by_id(ident))
    assert el.get("from") == want, ET.tostring(el)
    alive(server)


def test_iq_to_server_with_forged_from_is_answered_to_the_real_sender(server, clients):
    sender = clients("askme")
    victim = clients("notme")
    sender.send(f"<iq from='{victim.full}' to='localhost' type='get' id='v1'>"
                "<query xmlns='jabber:iq:version'/></iq>")
    assert expect(sender, by_id("v1")).get("type") == "result"
    victim.nothing(0.3)


def test_occupant_cannot_impersonate_another_occupant(server, clients):
    room = f"imp@{MUC}"
    boss = clients("boss")
    mallory = clients("mallory")
    create_instant_room(boss, room, "Boss")
    join(mallory, room, "Mallory")
    expect(boss, lambda e: e.get("from") == f"{room}/Mallory")
    # groupchat claiming to be Boss
    mallory.send(f"<message from='{room}/Boss' to='{room}' type='groupchat' id='g1'>"
                 "<body>I am the boss</body></message>")
    el = expect(boss, by_id("g1"))
    assert el.get("from") == f"{room}/Mallory"
    # private message claiming to be Boss, to Boss
    mallory.send(f"<message from='{room}/Boss' to='{room}/Boss' type='chat' id='p1'>"
                 "<body>psst</body></message>")
    el = expect(boss, by_id("p1"))
    assert el.get("from") == f"{room}/Mallory"
    # presence with a forged muc#user item is not reflected as such
    mallory.send(f"<presence to='{room}/Mallory' id='pr1'><x xmlns='{NS_MUC_USER}'>"
                 "<item affiliation='owner' role='moderator'/></x></presence>")
    el = expect(boss, lambda e: e.get("from") == f"{room}/Mallory" and e.tag == f"{C}presence")
    items = list(el.iter(f"{{{NS_MUC_USER}}}item"))
    assert len(items) == 1 and items[0].get("affiliation") == "none"
    assert items[0].get("role") == "participant"
    # admin requests carrying the owner's JID as 'from' are still mallory's: forbidden
    r = iq(mallory, f"<query xmlns='{NS_MUC_ADMIN}'><item nick='Boss' role='none'/></query>",
           room, "set")
    assert error_condition(r) == ("auth", "forbidden")
    mallory.send(f"<iq from='{boss.full}' to='{room}' type='set' id='forge-admin'>"
                 f"<query xmlns='{NS_MUC_ADMIN}'><item jid='mallory@localhost' "
                 "affiliation='owner'/></query></iq>")
    r = expect(mallory, by_id("forge-admin"))
    assert error_condition(r) == ("auth", "forbidden")
    alive(server)


def test_client_cannot_speak_as_a_room(server, clients):
    """A message addressed from a room's JID is stamped with the real sender."""
    victim = clients("roomvictim")
    mallory = clients("roommallory")
    mallory.send(f"<message from='fake@{MUC}' to='{victim.full}' type='groupchat' id='rg'>"
                 "<subject>pwned</subject></message>")
    el = expect(victim, by_id("rg"))
    assert el.get("from") == mallory.full


# -- JID validation and normalisation ---------------------------------------------------------

BAD_TOS = ["a..b", "@localhost", "user@", "localhost/", "user@localhost/",
           "a b@localhost", "x" * 1024 + "@localhost", "user@" + "h" * 1024,
           "user@localhost/" + "r" * 1024,  "us\u00a0er@localhost", "user@loc@alhost",
           "\u2000@localhost", "user@[::1", "user@.", "."]


@pytest.mark.parametrize("to", BAD_TOS)
@pytest.mark.parametrize("kind", ["message", "iq", "presence"])
def test_malformed_to_is_jid_malformed(server, clients, kind, to):
    c = clients("badto")
    to_xml = to
    ident = f"bad-{kind}"
    if kind == "message":
        c.send(f"<message to='{to_xml}' id='{ident}'><body>x</body></message>")
    elif kind == "iq":
        c.send(f"<iq to='{to_xml}' type='get' id='{ident}'><ping xmlns='urn:xmpp:ping'/></iq>")
    else:
        c.send(f"<presence to='{to_xml}' id='{ident}'/>")
    el = expect(c, by_id(ident))
    assert el.get("type") == "error"
    assert error_condition(el)[1] == "jid-malformed", ET.tostring(el)
    alive(server)


def test_to_is_normalised(server, clients):
    alice = clients("alice", resource="Res")
    bob = clients("bob")
    bob.send("<message to='ALICE@LocalHost/Res' type='chat' id='n1'><body>x</body></message>")
    el = expect(alice, by_id("n1"))
    assert el.get("from") == bob.full
    bob.send("<message to='\uff21lice@localhost/Res' type='chat' id='n2'><body>x</body></message>")
    assert expect(alice, by_id("n2")).get("from") == bob.full   # fullwidth A -> a (NFKC)


@pytest.mark.parametrize("resource, ok", [
    ("r" * 1023, True), ("r" * 1024, False), ("bad\ue000", False), ("\u2126", True),
    ("tab\there", False), (" ", None),
])
def test_bind_resource_validation(server, resource, ok):
    c = Raw(server.port)
    try:
        c.open(); c.starttls(); c.auth("binder", "pw"); c.open()
        el = c.bind(resource.replace("\t", "&#9;"))
        if ok is None:     # whitespace only: the server picks a resource
            assert el.get("type") == "result"
        elif ok:
            assert el.get("type") == "result", ET.tostring(el)
        else:
            assert el.get("type") == "error"
            assert error_condition(el)[1] in ("bad-request", "jid-malformed")
    finally:
        c.close()
    alive(server)


@pytest.mark.parametrize("jid", ["a..b", "@x", "user@localhost/", "x" * 1024 + "@localhost", ""])
def test_muc_admin_item_jid_is_validated(server, clients, jid):
    room = f"jidcheck{len(jid)}@{MUC}"
    owner = clients("jidowner")
    create_instant_room(owner, room, "O")
    r = iq(owner, f"<query xmlns='{NS_MUC_ADMIN}'><item jid='{jid}' affiliation='member'/></query>",
           room, "set")
    assert r.get("type") == "error"
    assert error_condition(r)[1] in ("jid-malformed", "bad-request", "not-acceptable"), ET.tostring(r)
    # nothing was added
    r = iq(owner, f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='member'/></query>", room)
    assert r.get("type") == "result" and not list(r.iter(f"{{{NS_MUC_ADMIN}}}item"))
    alive(server)


def test_muc_admin_item_jid_is_normalised(server, clients):
    room = f"jidnorm@{MUC}"
    owner = clients("normowner")
    create_instant_room(owner, room, "O")
    r = iq(owner, f"<query xmlns='{NS_MUC_ADMIN}'><item jid='MEMBER@LOCALHOST' affiliation='member'/>"
                  "</query>", room, "set")
    assert r.get("type") == "result", ET.tostring(r)
    r = iq(owner, f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='member'/></query>", room)
    assert [i.get("jid") for i in r.iter(f"{{{NS_MUC_ADMIN}}}item")] == ["member@localhost"]


@pytest.mark.parametrize("invitee", ["a..b", "@localhost", ""])
def test_muc_invite_jid_is_validated(server, clients, invitee):
    room = f"invcheck{len(invitee)}@{MUC}"
    owner = clients("invowner")
    create_instant_room(owner, room, "O")
    owner.send(f"<message to='{room}' id='inv'><x xmlns='{NS_MUC_USER}'>"
               f"<invite to='{invitee}'/></x></message>")
    el = expect(owner, by_id("inv"))
    assert el.get("type") == "error"
    assert error_condition(el)[1] in ("jid-malformed", "bad-request"), ET.tostring(el)
    alive(server)


@pytest.mark.parametrize("nick", ["bad\ue000", "x" * 1024, "\u0085"])
def test_muc_nick_is_validated(server, clients, nick):
    c = clients("nicky")
    c.send(f"<presence to='nicks@{MUC}/{nick}' id='nj'><x xmlns='http://jabber.org/protocol/muc'/>"
           "</presence>")
    el = expect(c, lambda e: e.get("id") == "nj" or e.get("type") == "error")
    assert el.get("type") == "error"
    assert error_condition(el)[1] in ("jid-malformed", "not-acceptable"), ET.tostring(el)
    alive(server)


@pytest.mark.parametrize("lookalike", ["Bo\u00adss", "\uff22oss", "Boss\u200b", "B\ufeffoss"])
def test_lookalike_nick_is_the_same_nick(server, clients, lookalike):
    """resourceprep maps soft hyphens, zero-width and fullwidth forms: no second 'Boss'."""
    room = f"lookalike{len(lookalike)}{ord(lookalike[1])}@{MUC}"
    boss = clients("realboss")
    create_instant_room(boss, room, "Boss")
    mallory = clients("fakeboss")
    el = join(mallory, room, lookalike)
    assert el.get("type") == "error", ET.tostring(el)
    assert error_condition(el)[1] == "conflict"
    alive(server)
