"""MUC limits over real sockets: per-occupant message rate, rooms per creator,
occupants per room, history length. Each refusal is a standard stanza error,
nothing is broadcast for a refused message, and the server keeps serving.
"""
import time
import xml.etree.ElementTree as ET

import pytest

from test_c2s_raw import C, Raw, start_server
from test_hardening import open_clients, alive, by_id, create_instant_room, error_condition, expect, join, login

MUC = "conference.localhost"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth", "--admin", "boss@localhost", config=(
        "muc_message_rate = 1\nmuc_message_burst = 3\n"
        "muc_max_rooms_per_creator = 2\nmuc_max_occupants = 3\n"
        "muc_max_history = 5\nmuc_default_history = 5\n"))
    yield srv
    srv.stop()


@pytest.fixture
def clients(server):
    yield from open_clients(server.port)


def _send_burst(c, room, n, prefix):
    for i in range(n):
        c.send(f"<message to='{room}' type='groupchat' id='{prefix}{i}'><body>{prefix} {i}</body>"
               "</message>")


def _outcomes(c, room, nick, n, prefix):
    """For each id: 'ok' (echoed by the room) or the error condition."""
    out = {}
    while len(out) < n:
        el = expect(c, lambda e: (e.get("id") or "").startswith(prefix))
        if el.get("type") == "error":
            out[el.get("id")] = error_condition(el)
        else:
            assert el.get("from") == f"{room}/{nick}"
            out[el.get("id")] = "ok"
    return out


def test_flooding_occupant_is_refused_with_policy_violation(server, clients):
    room = f"flood@{MUC}"
    alice = clients("flooder")
    bob = clients("listener")
    create_instant_room(alice, room, "A")
    join(bob, room, "B")
    _send_burst(alice, room, 10, "f")
    out = _outcomes(alice, room, "A", 10, "f")
    refused = [k for k, v in out.items() if v != "ok"]
    assert refused, out
    assert all(out[k] == ("wait", "policy-violation") for k in refused), out
    accepted = sorted(k for k, v in out.items() if v == "ok")
    assert 3 <= len(accepted) <= 8, out       # burst 3, plus what refilled meanwhile
    # the other occupant got exactly the accepted messages, nothing refused
    got = set()
    deadline = time.monotonic() + 3
    while len(got) < len(accepted) and time.monotonic() < deadline:
        el = expect(bob, lambda e: e.tag == f"{C}message" and (e.get("id") or "").startswith("f"))
        got.add(el.get("id"))
    assert got == set(accepted)
    bob.nothing(0.3)
    # the bucket refills: after a pause the occupant may speak again
    time.sleep(2.2)
    _send_burst(alice, room, 1, "g")
    assert _outcomes(alice, room, "A", 1, "g") == {"g0": "ok"}
    # another occupant is not affected by alice's flood
    _send_burst(bob, room, 1, "h")
    assert _outcomes(bob, room, "B", 1, "h") == {"h0": "ok"}
    alive(server)


def test_private_message_flood_is_limited_too(server, clients):
    room = f"pmflood@{MUC}"
    alice = clients("pmflooder")
    bob = clients("pmtarget")
    create_instant_room(alice, room, "A")
    join(bob, room, "B")
    for i in range(8):
        alice.send(f"<message to='{room}/B' type='chat' id='p{i}'><body>{i}</body></message>")
    errors = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and len(errors) < 1:
        el = expect(alice, lambda e: (e.get("id") or "").startswith("p") and e.get("type") == "error")
        errors.append(error_condition(el))
    assert errors and errors[0] == ("wait", "policy-violation")
    alive(server)


def test_invitation_spam_is_limited(server, clients):
    """Each invitee costs one message: a burst of invitations is refused as a whole."""
    room = f"invspam@{MUC}"
    alice = clients("inviter")
    friend = clients("invitee")
    friend.send("<presence/>")
    create_instant_room(alice, room, "A")
    invites = "".join(f"<invite to='victim{i}@localhost'/>" for i in range(5))
    alice.send(f"<message to='{room}' id='spam'><x xmlns='http://jabber.org/protocol/muc#user'>"
               f"{invites}</x></message>")
    assert error_condition(expect(alice, by_id("spam"))) == ("wait", "policy-violation")
    alice.send(f"<message to='{room}' id='one'><x xmlns='http://jabber.org/protocol/muc#user'>"
               "<invite to='invitee@localhost'/></x></message>")
    el = expect(friend, lambda e: e.get("from") == room)
    assert el.find("{http://jabber.org/protocol/muc#user}x/"
                   "{http://jabber.org/protocol/muc#user}invite") is not None
    alive(server)


def test_rooms_per_creator_limit(server, clients):
    c = clients("creator")
    for i in range(2):
        create_instant_room(c, f"mine{i}@{MUC}", "me")
    el = join(c, f"mine2@{MUC}", "me")
    assert el.get("type") == "error"
    cond = error_condition(el)
    assert cond[1] in ("resource-constraint", "policy-violation", "not-allowed"), cond
    # the refused room does not exist afterwards
    other = clients("creator2")
    el = join(other, f"mine2@{MUC}", "other")
    assert el.get("type") != "error"
    assert any(s.get("code") == "201" for s in el.iter("{http://jabber.org/protocol/muc#user}status"))
    # a service admin is exempt
    boss = clients("boss")
    for i in range(3):
        create_instant_room(boss, f"boss{i}@{MUC}", "boss")
    alive(server)


def test_max_occupants_per_room(server, clients):
    room = f"small@{MUC}"
    owner = clients("smallowner")
    create_instant_room(owner, room, "O")
    for i in range(2):
        assert join(clients(f"guest{i}"), room, f"G{i}").get("type") != "error"
    late = clients("lateguest")
    el = join(late, room, "late")
    assert el.get("type") == "error"
    assert error_condition(el)[1] == "service-unavailable"
    # the owner may still enter with a second resource (XEP-0045 §7.2.9)
    owner2 = clients("smallowner", resource="second")
    assert join(owner2, room, "O2").get("type") != "error"
    alive(server)


def test_history_is_capped(server, clients):
    room = f"hist@{MUC}"
    c = clients("boss", resource="historian")     # a service admin: no message rate
    create_instant_room(c, room, "H")
    for i in range(8):
        c.send(f"<message to='{room}' type='groupchat' id='h{i}'><body>{i}</body></message>")
        assert expect(c, by_id(f"h{i}")).get("type") != "error"
    late = clients("historyreader")
    late.send(f"<presence to='{room}/late'><x xmlns='http://jabber.org/protocol/muc'>"
              "<history maxstanzas='1000'/></x></presence>")
    bodies = []
    while True:
        el = late.next()
        if el.tag == f"{C}message" and el.find(f"{C}subject") is not None:
            break
        if el.tag == f"{C}message" and el.find(f"{C}body") is not None:
            bodies.append(el.find(f"{C}body").text)
    assert bodies == ["3", "4", "5", "6", "7"], bodies
