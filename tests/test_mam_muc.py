"""Room archives (XEP-0313 on the room JID), room stanza ids, and join history after a restart.

slixmpp's xep_0313 pages through a room archive; raw sockets check status
codes 170/171, the privacy rules and what a semi-anonymous room's archive
shows. Every server is a real subprocess.
"""
import asyncio
import time
import xml.etree.ElementTree as ET

import pytest

from test_c2s_raw import C, Raw, stanza_error
from test_mam import FWD, MAM, SID, _body, bodies, collect, connect, form, make_client, rsm

slixmpp = pytest.importorskip("slixmpp")

MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_OWNER = MUC + "#owner"
MUC_ADMIN = MUC + "#admin"
DATA = "jabber:x:data"
ROOM = "lounge@conference.localhost"
_ids = iter(range(1, 10**9))


@pytest.fixture
def logged(xmppd_server_factory, tmp_path):
    """Start servers whose new rooms are archived (muc_log_by_default = true; off by default)."""
    conf = tmp_path / "log.toml"
    conf.write_text("muc_log_by_default = true\n")
    return lambda **kw: xmppd_server_factory("--config", conf, **kw)


def login(server, user):
    c = Raw(server.port)
    c.login(user, "pw", resource="r")
    return c


def wait_for(c, pred, timeout=5.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        el = c.next(max(0.05, deadline - time.monotonic()))
        if pred(el):
            return el
        seen.append(ET.tostring(el)[:200])
    raise AssertionError(f"nothing matched; skipped {seen}")


def iq(c, body, to=ROOM, itype="set"):
    iq_id = f"i{next(_ids)}"
    c.send(f"<iq type='{itype}' to='{to}' id='{iq_id}'>{body}</iq>")
    return wait_for(c, lambda el: el.tag == f"{C}iq" and el.get("id") == iq_id)


def codes(el):
    return {s.get("code") for s in el.iter(f"{{{MUC_USER}}}status")}


def join(c, nick, room=ROOM, history=""):
    """Join; return (self-presence, [history messages]) once the subject arrived."""
    c.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{history}</x></presence>")
    pres = wait_for(c, lambda el: el.tag == f"{C}presence" and el.get("from") == f"{room}/{nick}"
                    and (el.get("type") == "error" or "110" in codes(el)))
    if pres.get("type") == "error":
        return pres, []
    hist = []
    while True:
        el = c.next()
        if el.tag == f"{C}message" and el.find(f"{C}subject") is not None:
            return pres, hist
        if el.tag == f"{C}message":
            hist.append(el)


def configure(c, fields, room=ROOM):
    parts = [f"<field var='FORM_TYPE'><value>{MUC}#roomconfig</value></field>"]
    for var, value in fields.items():
        parts.append(f"<field var='{var}'><value>{value}</value></field>")
    r = iq(c, f"<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>{''.join(parts)}"
              f"</x></query>", room)
    assert r.get("type") == "result", ET.tostring(r)


def create(c, nick="Owner", room=ROOM, **fields):
    pres, _ = join(c, nick, room)
    assert "201" in codes(pres)
    configure(c, fields, room)
    return pres


def say(c, text, room=ROOM):
    c.send(f"<message to='{room}' type='groupchat'><body>{text}</body></message>")
    return wait_for(c, lambda el: el.tag == f"{C}message" and el.findtext(f"{C}body") == text)


def room_query(c, body="", room=ROOM, iq_id=None):
    iq_id = iq_id or f"m{next(_ids)}"
    c.send(f"<iq type='set' to='{room}' id='{iq_id}'><query xmlns='{MAM}' queryid='rq'>{body}"
           f"</query></iq>")
    return collect(c, iq_id)


# -- slixmpp -------------------------------------------------------------------------------

async def _slixmpp_room(port, n):
    alice, bob = make_client("alice"), make_client("bob")
    try:
        await connect(alice, bob, port=port)
        muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]
        pres, _, _, _ = await muc_a.join_muc_wait(slixmpp.JID(ROOM), "Alice", maxstanzas=0,
                                                  timeout=10)
        assert 170 in pres["muc"]["status_codes"]           # logged by default: §7.2.12
        await muc_a.set_room_config(ROOM, await muc_a.get_room_config(ROOM, timeout=5),
                                    timeout=5)
        await muc_b.join_muc_wait(slixmpp.JID(ROOM), "Bob", maxstanzas=0, timeout=10)
        got = asyncio.get_running_loop().create_future()
        received = []

        def on_msg(m):
            if m["body"]:
                received.append(m)
                if len(received) == n and not got.done():
                    got.set_result(True)
        bob.add_event_handler("groupchat_message", on_msg)
        for i in range(n):
            alice.send_message(mto=ROOM, mbody=f"room {i:03d}", mtype="groupchat")
        await asyncio.wait_for(got, 60)
        ids = [m["stanza_id"]["id"] for m in received]
        assert {m["stanza_id"]["by"] for m in received} == {ROOM}
        mam = bob.plugin["xep_0313"]
        fwd = [m async for m in mam.iterate(jid=slixmpp.JID(ROOM), rsm={"max": 25})]
        back = [m async for m in mam.iterate(jid=slixmpp.JID(ROOM), reverse=True,
                                             rsm={"max": 25})]
        return ids, fwd, back
    finally:
        for c in (alice, bob):
            c.disconnect()


def test_slixmpp_pages_a_room_archive_both_ways(logged):
    n = 250
    ids, fwd, back = asyncio.run(_slixmpp_room(logged().port, n))
    expected = [f"room {i:03d}" for i in range(n)]
    assert [_body(m) for m in fwd] == expected
    assert [m["mam_result"]["id"] for m in fwd] == ids
    assert [_body(m) for m in back] == expected[::-1]
    assert {str(m["mam_result"]["forwarded"]["stanza"]["from"]) for m in fwd} == {ROOM + "/Alice"}


# -- history after a restart -------------------------------------------------------------------

def test_room_history_and_archive_survive_a_restart(logged, tmp_path):
    data = tmp_path / "d"
    server = logged(data_dir=data)
    alice = login(server, "alice")
    create(alice, "Alice", **{"muc#roomconfig_persistentroom": "1"})
    sent = [say(alice, f"before restart {i}") for i in range(3)]
    sids = [m.find(f"{{{SID}}}stanza-id").get("id") for m in sent]
    alice.close()
    server.stop()

    server = logged(data_dir=data)
    bob = login(server, "bob")
    pres, hist = join(bob, "Bob")
    assert "170" in codes(pres)
    assert [m.findtext(f"{C}body") for m in hist] == [f"before restart {i}" for i in range(3)]
    for m, sid in zip(hist, sids):
        assert m.get("from") == ROOM + "/Alice" and m.get("to") == "bob@localhost/r"
        assert m.find(f"{{{SID}}}stanza-id").get("id") == sid
        delay = m.find("{urn:xmpp:delay}delay")
        assert delay.get("from") == ROOM and delay.get("stamp")
    # new messages join the loaded history; maxstanzas is honoured
    say(bob, "after restart")
    carol = login(server, "carol")
    _, hist = join(carol, "Carol", history="<history maxstanzas='2'/>")
    assert [m.findtext(f"{C}body") for m in hist] == ["before restart 2", "after restart"]
    results, fin = room_query(carol)
    assert bodies(results) == [f"before restart {i}" for i in range(3)] + ["after restart"]
    assert fin.get("type") == "result" and fin.get("from") == ROOM

    async def fetch():           # a client library, after another restart
        c = make_client("dave")
        try:
            await connect(c, port=server.port)
            return [_body(m) async for m in c.plugin["xep_0313"].iterate(
                jid=slixmpp.JID(ROOM), rsm={"max": 3})]
        finally:
            c.disconnect()
    server.stop()
    server = logged(data_dir=data)
    assert asyncio.run(fetch()) == [f"before restart {i}" for i in range(3)] + ["after restart"]


# -- options, status codes, privacy -------------------------------------------------------------

def test_logging_option_status_codes_and_forged_ids(logged):
    xmppd_server = logged()
    alice = login(xmppd_server, "alice")
    create(alice, "Alice")
    r = iq(alice, f"<query xmlns='{MUC_OWNER}'/>", itype="get")
    field = [f for f in r.iter(f"{{{DATA}}}field")
             if f.get("var") == "muc#roomconfig_enablelogging"]
    assert field and field[0].findtext(f"{{{DATA}}}value") in ("1", "true")
    info = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", itype="get")
    feats = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert {MAM, SID} <= feats
    alice.send(f"<message to='{ROOM}' type='groupchat'><body>one</body>"
               f"<stanza-id xmlns='{SID}' by='{ROOM}' id='forged'/></message>")
    m = wait_for(alice, lambda el: el.findtext(f"{C}body") == "one")
    ids = [s.get("id") for s in m.findall(f"{{{SID}}}stanza-id")]
    assert len(ids) == 1 and ids[0] != "forged"

    configure(alice, {"muc#roomconfig_enablelogging": "0"})
    msg = wait_for(alice, lambda el: el.tag == f"{C}message" and "171" in codes(el))
    assert msg.get("from") == ROOM
    m = say(alice, "not archived")
    assert m.find(f"{{{SID}}}stanza-id") is None
    bob = login(xmppd_server, "bob")
    pres, _ = join(bob, "Bob")
    assert "170" not in codes(pres)
    configure(alice, {"muc#roomconfig_enablelogging": "1"})
    wait_for(alice, lambda el: el.tag == f"{C}message" and "170" in codes(el))
    say(alice, "two")
    results, _ = room_query(bob)
    assert bodies(results) == ["one", "two"]


def test_members_only_archive_is_for_members(logged):
    xmppd_server = logged()
    alice = login(xmppd_server, "alice")
    create(alice, "Alice", **{"muc#roomconfig_membersonly": "1"})
    say(alice, "members talk")
    mallory = login(xmppd_server, "mallory")
    results, r = room_query(mallory)
    assert results == [] and stanza_error(r) == ("auth", "forbidden")
    r = iq(mallory, f"<query xmlns='{MAM}'/>", itype="get")
    assert stanza_error(r) == ("auth", "forbidden")
    r = iq(alice, f"<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='member'/>"
                  "</query>")
    assert r.get("type") == "result"
    bob = login(xmppd_server, "bob")
    results, r = room_query(bob)
    assert r.get("type") == "result" and bodies(results) == ["members talk"]
    # banned: forbidden even in an open room
    r = iq(alice, f"<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='outcast'/>"
                  "</query>")
    assert r.get("type") == "result"
    results, r = room_query(bob)
    assert stanza_error(r) == ("auth", "forbidden")


def test_semi_anonymous_archive_hides_real_jids(logged):
    xmppd_server = logged()
    alice = login(xmppd_server, "alice")
    create(alice, "Alice")              # whois = moderators (semi-anonymous)
    alice.send(f"<message to='{ROOM}' type='groupchat'><body>hi</body>"
               f"<x xmlns='{MUC_USER}'><item jid='fake@evil'/></x></message>")
    wait_for(alice, lambda el: el.findtext(f"{C}body") == "hi")
    bob = login(xmppd_server, "bob")
    results, _ = room_query(bob)
    assert bodies(results) == ["hi"]
    raw = ET.tostring(results[0]).decode()
    assert "alice@localhost" not in raw and "fake@evil" not in raw
    # a bare (real) JID filter would reveal who spoke: refused
    results, r = room_query(bob, form(**{"with": "alice@localhost"}))
    assert stanza_error(r) == ("auth", "forbidden")
    results, r = room_query(bob, form(**{"with": ROOM + "/Alice"}))
    assert bodies(results) == ["hi"]
    # non-anonymous: the real JID is shown
    configure(alice, {"muc#roomconfig_whois": "anyone"})
    results, _ = room_query(bob)
    items = [i.get("jid") for i in results[0].iter(f"{{{MUC_USER}}}item")]
    assert items == ["alice@localhost"]


def test_room_query_errors_and_destroy_deletes_the_archive(logged):
    xmppd_server = logged()
    alice = login(xmppd_server, "alice")
    create(alice, "Alice")          # temporary: a destroyed persistent room leaves a tombstone
    say(alice, "x")
    for body, condition in ((form(color="red"), "feature-not-implemented"),
                            (rsm(after="nope"), "item-not-found"),
                            (rsm(max="x"), "bad-request")):
        results, r = room_query(alice, body)
        assert results == [] and stanza_error(r)[1] == condition, body
    r = iq(alice, f"<query xmlns='{MUC_OWNER}'><destroy/></query>")
    assert r.get("type") == "result"
    create(alice, "Alice")
    results, r = room_query(alice)
    assert r.get("type") == "result" and results == []


def test_rooms_are_not_archived_by_default(xmppd_server):
    alice = login(xmppd_server, "alice")
    pres = create(alice, "Alice")
    assert "170" not in codes(pres)
    r = iq(alice, f"<query xmlns='{MUC_OWNER}'/>", itype="get")
    field = [f for f in r.iter(f"{{{DATA}}}field")
             if f.get("var") == "muc#roomconfig_enablelogging"]
    assert field[0].findtext(f"{{{DATA}}}value") in ("0", "false")
    m = say(alice, "off the record")
    assert m.find(f"{{{SID}}}stanza-id") is None
    results, r = room_query(alice)
    assert r.get("type") == "result" and results == []
    configure(alice, {"muc#roomconfig_enablelogging": "1"})
    wait_for(alice, lambda el: el.tag == f"{C}message" and "170" in codes(el))
    assert say(alice, "on the record").find(f"{{{SID}}}stanza-id") is not None
    assert bodies(room_query(alice)[0]) == ["on the record"]
