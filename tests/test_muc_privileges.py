"""XEP-0045 privilege matrix: every muc#admin / muc#owner operation (plus
registration, subject, invite, groupchat) by every affiliation and role.

Actors (one session each, one fresh room per successful case):

====  ===========  ============  ==========================================
name  affiliation  role          how
====  ===========  ============  ==========================================
o     owner        moderator     creates the room
a     admin        moderator     set by o
m     member       participant   set by o
p     none         participant
v     none         visitor       voice revoked by o
n     none         moderator     moderator role granted by o
x     outcast      (not in)      banned by o, acts from outside
====  ===========  ============  ==========================================

plus ``t`` (none/participant), a target nobody acts as, and ``z``, an
outsider that receives invitations.

Expectations follow the XEP-0045 privilege tables (§5.1.2 roles, §5.2.1
affiliations) and the MUST NOTs of §8-§10: nobody acts on a higher
affiliation (not-allowed), admins and owners keep voice and moderator
status (not-allowed), only owners edit the owner and admin lists
(forbidden), banning oneself or removing the last owner is a conflict.
Where the XEP leaves the error condition open, either forbidden or
not-allowed is accepted. Every refusal is followed by a check that the room
state (affiliation lists, role lists, room name) is exactly what it was.
"""
import itertools
import time
import xml.etree.ElementTree as ET

import pytest

from test_c2s_raw import C, start_server
from test_hardening import (NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, by_id, error_condition,
                            expect, iq, join, login, ping)

MUC = "conference.localhost"
ACTORS = ["o", "a", "m", "p", "v", "n", "x"]
NICK = {k: k.upper() for k in "oampvnxtz"}
JID = {k: f"{k}user@localhost" for k in "oampvnxtz"}

F = {"forbidden"}
NA = {"not-allowed"}
REFUSED = {"forbidden", "not-allowed"}
CONFLICT = {"conflict"}

_rooms = itertools.count(1)


# -- the operations -------------------------------------------------------------------------

def admin_set(attrs):
    return lambda c, room: iq(c, f"<query xmlns='{NS_MUC_ADMIN}'><item {attrs}/></query>", room, "set")


def admin_get(attrs):
    return lambda c, room: iq(c, f"<query xmlns='{NS_MUC_ADMIN}'><item {attrs}/></query>", room)


def role(nick, r):
    return admin_set(f"nick='{NICK[nick]}' role='{r}'")


def aff(who, a):
    return admin_set(f"jid='{JID[who]}' affiliation='{a}'")


def owner_get(c, room):
    return iq(c, f"<query xmlns='{NS_MUC_OWNER}'/>", room)


def owner_submit(c, room):
    return iq(c, f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
                 "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                 "<field var='muc#roomconfig_roomname'><value>Renamed</value></field></x></query>",
              room, "set")


def destroy(c, room):
    return iq(c, f"<query xmlns='{NS_MUC_OWNER}'><destroy><reason>bye</reason></destroy></query>",
              room, "set")


def register_get(c, room):
    return iq(c, "<query xmlns='jabber:iq:register'/>", room)


def _message(c, room, body, ident):
    c.send(f"<message to='{room}' type='groupchat' id='{ident}'>{body}</message>")
    return expect(c, by_id(ident), what=f"reflection or error for {ident}")


def subject(c, room):
    return _message(c, room, "<subject>New subject</subject>", f"subj{next(_rooms)}")


def groupchat(c, room):
    return _message(c, room, "<body>hello</body>", f"gc{next(_rooms)}")


def invite(c, room, clients):
    ident = f"inv{next(_rooms)}"
    c.send(f"<message to='{room}' id='{ident}'><x xmlns='{NS_MUC_USER}'>"
           f"<invite to='{JID['z']}'/></x></message>")
    z = clients["z"]

    def invited(e):
        return e.get("from") == room and e.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}invite") is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:      # success reaches z, a refusal comes back to c
        for who, pred in ((z, invited), (c, by_id(ident))):
            try:
                return expect(who, pred, timeout=0.2)
            except AssertionError:
                pass
    raise AssertionError(f"no invitation and no error for {ident}")


# (name, operation, allowed actors, refusal conditions per actor (default REFUSED), skipped actors,
#  effect: (kind, key, value) expected in the state after success, or None)
OPS = [
    # §8.2 kick; a user cannot be kicked by a moderator with a lower affiliation
    ("kick participant", role("t", "none"), "oan", {}, "", ("role", "T", None)),
    ("kick member", role("m", "none"), "oa", {"n": NA}, "m", ("role", "M", None)),
    ("kick admin", role("a", "none"), "o", {"n": NA}, "a", ("role", "A", None)),
    ("kick owner", role("o", "none"), "", {"a": NA, "n": NA}, "o", None),
    # §8.3/8.4 voice; nobody revokes voice from an admin or owner
    ("grant voice", role("v", "participant"), "oan", {}, "v", ("role", "V", "participant")),
    ("revoke voice", role("t", "visitor"), "oan", {}, "", ("role", "T", "visitor")),
    ("revoke voice of admin", role("a", "visitor"), "", {"o": NA, "n": NA}, "a", None),
    ("revoke voice of owner", role("o", "visitor"), "", {"a": NA, "n": NA}, "o", None),
    # §9.6/9.7 moderator status: admins and owners only; never revoked from admins/owners
    ("grant moderator", role("t", "moderator"), "oa", {}, "", ("role", "T", "moderator")),
    ("revoke moderator", role("n", "participant"), "oa", {}, "n", ("role", "N", "participant")),
    ("revoke moderator of admin", role("a", "participant"), "", {"o": NA, "n": NA}, "a", None),
    # §9.1 ban: admins and owners; not a higher affiliation; never oneself
    ("ban participant", aff("t", "outcast"), "oa", {"n": F}, "", ("aff", JID["t"], "outcast")),
    ("ban member", aff("m", "outcast"), "oa", {"n": F, "m": F}, "", ("aff", JID["m"], "outcast")),
    ("ban admin", aff("a", "outcast"), "o", {"a": CONFLICT | NA}, "", ("aff", JID["a"], "outcast")),
    ("ban owner", aff("o", "outcast"), "", {"a": NA, "o": CONFLICT}, "", None),
    ("unban", aff("x", "none"), "oa", {"n": F}, "", ("aff", JID["x"], None)),
    # §9.3/9.4 member list: admins and owners
    ("grant membership", aff("t", "member"), "oa", {"n": F}, "", ("aff", JID["t"], "member")),
    ("revoke membership", aff("m", "none"), "oa", {"n": F, "m": F}, "", ("aff", JID["m"], None)),
    # §10.3-10.7 owner and admin lists: owners only (forbidden)
    ("grant admin", aff("t", "admin"), "o", {"a": F, "n": F}, "", ("aff", JID["t"], "admin")),
    ("revoke admin", aff("a", "member"), "o", {"n": F}, "", ("aff", JID["a"], "member")),
    ("grant owner", aff("t", "owner"), "o", {"a": F, "n": F}, "", ("aff", JID["t"], "owner")),
    ("revoke last owner", aff("o", "admin"), "", {"o": CONFLICT, "n": F}, "", None),
    # list retrieval
    ("get member list", admin_get("affiliation='member'"), "oa", {}, "", None),
    ("get ban list", admin_get("affiliation='outcast'"), "oa", {}, "", None),
    ("get owner list", admin_get("affiliation='owner'"), "o", {}, "a", None),
    ("get admin list", admin_get("affiliation='admin'"), "o", {}, "a", None),
    ("get moderator list", admin_get("role='moderator'"), "oan", {}, "", None),
    ("get voice list", admin_get("role='participant'"), "oan", {}, "", None),
    # §10 owner use cases
    ("get config form", owner_get, "o", {}, "", None),
    ("submit config", owner_submit, "o", {}, "", ("name", None, "Renamed")),
    ("destroy", destroy, "o", {}, "", ("gone", None, None)),
    # §7: messages, subject (changesubject off), invitations (open room), registration
    ("groupchat", groupchat, "oampn", {"v": F, "x": {"not-acceptable", "forbidden"}}, "", None),
    ("change subject", subject, "oan", {"m": F, "p": F, "v": F, "x": {"not-acceptable", "forbidden"}},
     "", None),
    ("invite", "invite", "oampn", {"v": F, "x": F}, "", None),
    ("register", register_get, "oam", {"p": {"registration-required"}, "v": {"registration-required"},
                                       "n": {"registration-required"}, "x": F}, "", None),
]


# -- room setup and state -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth")
    clients = {k: login(srv.port, f"{k}user", "r") for k in "oampvnxtz"}
    clients["z"].send("<presence/>")     # available: invitations are delivered, not stored
    yield srv, clients
    for c in clients.values():
        c.close()
    srv.stop()


def make_room(clients):
    """A fresh room with every actor in place; returns its JID."""
    room = f"matrix{next(_rooms)}@{MUC}"
    o = clients["o"]
    el = join(o, room, NICK["o"])
    assert any(s.get("code") == "201" for s in el.iter(f"{{{NS_MUC_USER}}}status"))
    r = iq(o, f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>", room, "set")
    assert r.get("type") == "result", ET.tostring(r)
    items = "".join(f"<item jid='{JID[k]}' affiliation='{v}'/>"
                    for k, v in (("a", "admin"), ("m", "member"), ("x", "outcast")))
    r = iq(o, f"<query xmlns='{NS_MUC_ADMIN}'>{items}</query>", room, "set")
    assert r.get("type") == "result", ET.tostring(r)
    for k in "ampvnt":
        el = join(clients[k], room, NICK[k], history=False)
        assert el.get("type") != "error", ET.tostring(el)
    for nick, r_ in (("v", "visitor"), ("n", "moderator")):
        r = role(nick, r_)(o, room)
        assert r.get("type") == "result", ET.tostring(r)
    return room


def snapshot(clients, room):
    """Affiliations, roles and name as the owner sees them (None if the room is gone)."""
    o = clients["o"]
    state = {"aff": {}, "role": {}}
    for a in ("owner", "admin", "member", "outcast"):
        r = admin_get(f"affiliation='{a}'")(o, room)
        if r.get("type") == "error":
            if error_condition(r)[1] == "item-not-found":
                return None
            raise AssertionError(ET.tostring(r))
        for it in r.iter(f"{{{NS_MUC_ADMIN}}}item"):
            state["aff"][it.get("jid")] = a
    for ro in ("moderator", "participant", "visitor"):
        r = admin_get(f"role='{ro}'")(o, room)
        if r.get("type") == "error":
            # the owner may have lost its moderator role (kicked): roles unknown
            state["role"] = None
            break
        for it in r.iter(f"{{{NS_MUC_ADMIN}}}item"):
            state["role"][it.get("nick")] = ro
    r = owner_get(o, room)
    name = None
    if r.get("type") == "result":
        for f in r.iter("{jabber:x:data}field"):
            if f.get("var") == "muc#roomconfig_roomname":
                v = f.find("{jabber:x:data}value")
                name = v.text if v is not None else ""
    state["name"] = name
    return state


class NoAnswer(Exception):
    pass


def run(op, c, room, clients):
    try:
        if op == "invite":
            return invite(c, room, clients)
        return op(c, room)
    except AssertionError as e:
        raise NoAnswer(str(e)[:300]) from None


def check_effect(effect, after):
    kind, key, value = effect
    if kind == "gone":
        assert after is None
    elif kind == "name":
        assert after["name"] == value
    elif kind == "aff":
        assert after["aff"].get(key) == value, after
    elif kind == "role" and after["role"] is not None:
        assert after["role"].get(key) == value, after


CASES = [(name, actor) for name, _, _, _, skip, _ in OPS for actor in ACTORS if actor not in skip]
_by_name = {o[0]: o for o in OPS}


def test_matrix_covers_every_actor_and_operation():
    assert len(OPS) >= 35 and len(CASES) >= 230


@pytest.mark.parametrize("name", [o[0] for o in OPS])
def test_privilege(world, name):
    """All actors for one operation: refusals first (one room), then each success in a fresh room."""
    srv, clients = world
    _, op, allowed, refusals, skip, effect = _by_name[name]
    actors = [a for a in ACTORS if a not in skip]
    refused = [a for a in actors if a not in allowed]
    room = make_room(clients)
    before = snapshot(clients, room)
    failures = []
    for actor in refused:
        try:
            el = run(op, clients[actor], room, clients)
        except NoAnswer as e:
            failures.append(f"{name} by {actor}: no answer ({e})")
            continue
        cond = error_condition(el)
        want = refusals.get(actor, REFUSED)
        if cond is None or cond[1] not in want:
            failures.append(f"{name} by {actor}: expected {sorted(want)}, got "
                            f"{cond or ET.tostring(el)[:200]}")
            continue
        after = snapshot(clients, room)
        if after != before:
            failures.append(f"{name} by {actor}: refused ({cond[1]}) but the room changed:\n"
                            f"  before {before}\n  after  {after}")
            room = make_room(clients)
            before = snapshot(clients, room)
    for actor in (a for a in actors if a in allowed):
        room = make_room(clients)
        try:
            el = run(op, clients[actor], room, clients)
        except NoAnswer as e:
            failures.append(f"{name} by {actor}: no answer ({e})")
            continue
        cond = error_condition(el)
        if cond is not None:
            failures.append(f"{name} by {actor}: expected success, got {cond}")
            continue
        if effect is not None:
            try:
                check_effect(effect, snapshot(clients, room))
            except AssertionError as e:
                failures.append(f"{name} by {actor}: succeeded without the effect {effect}: {e}")
    assert not failures, "\n".join(failures)
    assert ping(clients["z"]).get("type") == "result"
