"""Message archives (XEP-0313) and stanza ids (XEP-0359) for accounts, against a real server.

slixmpp's xep_0313/xep_0059 page through the archive as a client would;
raw sockets check the wire format and the hostile inputs.
"""
import asyncio
import ssl
import time

import pytest

from test_c2s_raw import C, Raw, stanza_error
from test_offline import messages, sync

slixmpp = pytest.importorskip("slixmpp")

MAM = "urn:xmpp:mam:2"
SID = "urn:xmpp:sid:0"
FWD = "urn:xmpp:forward:0"
RSM = "http://jabber.org/protocol/rsm"


def make_client(user, resource="test"):
    c = slixmpp.ClientXMPP(f"{user}@localhost/{resource}", "password")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ("xep_0030", "xep_0004", "xep_0045", "xep_0059", "xep_0297", "xep_0313",
              "xep_0359"):
        c.register_plugin(p)
    return c


async def connect(*clients, port):
    for c in clients:
        c.connect("127.0.0.1", port)
        await c.wait_until("session_start", timeout=10)
        c.send_presence()


def login(server, user, resource="r"):
    c = Raw(server.port)
    c.login(user, "pw", resource=resource)
    return c


def mam_iq(c, body="", iq_id="q", to=None, qid="qid"):
    t = f" to='{to}'" if to else ""
    q = f" queryid='{qid}'" if qid else ""
    c.send(f"<iq type='set' id='{iq_id}'{t}><query xmlns='{MAM}'{q}>{body}</query></iq>")


def collect(c, iq_id="q", wait=5):
    """(result messages, the answering iq) for one query."""
    out = []
    while True:
        el = c.next(wait)
        if el.tag == f"{C}iq" and el.get("id") == iq_id:
            return out, el
        if el.tag == f"{C}message" and el.find(f"{{{MAM}}}result") is not None:
            out.append(el)


def reply(c, iq_id):
    """The iq answering ``iq_id`` (other stanzas are skipped)."""
    while True:
        el = c.next()
        if el.tag == f"{C}iq" and el.get("id") == iq_id:
            return el


def bodies(results):
    return [r.find(f"{{{MAM}}}result/{{{FWD}}}forwarded/{C}message/{C}body").text
            for r in results]


def form(**fields):
    xs = ["<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
          f"<value>{MAM}</value></field>"]
    for var, value in fields.items():
        var = var.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        xs.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                  + "</field>")
    return "".join(xs) + "</x>"


def rsm(**kw):
    inner = "".join(f"<{k}>{v}</{k}>" if v is not None else f"<{k}/>" for k, v in kw.items())
    return f"<set xmlns='{RSM}'>{inner}</set>"


def send_chat(c, to, n, prefix="m"):
    for i in range(n):
        c.send(f"<message to='{to}' type='chat' id='{prefix}{i}'><body>{prefix}{i}</body></message>")
    sync(c)


# -- slixmpp --------------------------------------------------------------------------

async def _slixmpp_paging(port, n):
    alice, bob = make_client("alice"), make_client("bob")
    try:
        await connect(alice, bob, port=port)
        got = asyncio.get_running_loop().create_future()
        received = []

        def on_msg(m):
            if m["body"]:
                received.append(m)
                if len(received) == n and not got.done():
                    got.set_result(True)
        bob.add_event_handler("message", on_msg)
        for i in range(n):
            alice.send_message(mto="bob@localhost", mbody=f"msg {i:03d}", mtype="chat")
        await asyncio.wait_for(got, 30)
        # XEP-0359: every delivered message carries the archive's stanza-id
        ids = [m["stanza_id"]["id"] for m in received]
        assert all(ids) and len(set(ids)) == n
        assert {m["stanza_id"]["by"] for m in received} == {"bob@localhost"}

        mam_b = bob.plugin["xep_0313"]
        forward = [m async for m in mam_b.iterate(rsm={"max": 20})]
        backward = [m async for m in mam_b.iterate(reverse=True, rsm={"max": 20})]
        with_alice = [m async for m in mam_b.iterate(with_jid=slixmpp.JID("alice@localhost"),
                                                     rsm={"max": 50})]
        mam_a = alice.plugin["xep_0313"]
        sent = [m async for m in mam_a.iterate(rsm={"max": 50})]
        return ids, forward, backward, with_alice, sent
    finally:
        for c in (alice, bob):
            c.disconnect()


def _body(m):
    return m["mam_result"]["forwarded"]["stanza"]["body"]


def test_slixmpp_pages_250_messages_both_ways_without_gap_or_duplicate(xmppd_server):
    n = 250
    ids, forward, backward, with_alice, sent = asyncio.run(_slixmpp_paging(xmppd_server.port, n))
    expected = [f"msg {i:03d}" for i in range(n)]
    assert [_body(m) for m in forward] == expected
    assert [m["mam_result"]["id"] for m in forward] == ids
    # slixmpp yields a reverse iteration newest first
    assert [_body(m) for m in backward] == expected[::-1]
    assert [_body(m) for m in with_alice] == expected
    # the sender's own archive has the outgoing copies (no duplicates, in order)
    assert [_body(m) for m in sent] == expected
    stamp = forward[0]["mam_result"]["forwarded"]["delay"]["stamp"]
    assert abs(stamp.timestamp() - time.time()) < 120


# -- wire format, filters, paging details ------------------------------------------------

def test_results_wire_format_fin_and_rsm(xmppd_server):
    bob = login(xmppd_server, "bob")
    bob.send("<presence/>")
    alice = login(xmppd_server, "alice")
    send_chat(alice, "bob@localhost", 5)
    got = messages(bob)
    assert len(got) == 5
    sids = [m.find(f"{{{SID}}}stanza-id").get("id") for m in got]

    mam_iq(bob, rsm(max=2))
    results, iq = collect(bob)
    assert iq.get("type") == "result"
    assert bodies(results) == ["m0", "m1"]
    for r in results:
        assert r.get("to") == "bob@localhost/r" and r.get("from") is None
        res = r.find(f"{{{MAM}}}result")
        assert res.get("queryid") == "qid"
        inner = res.find(f"{{{FWD}}}forwarded/{C}message")
        assert inner.get("from") == "alice@localhost/r"
        assert res.find(f"{{{FWD}}}forwarded/{{urn:xmpp:delay}}delay").get("stamp")
    assert [r.find(f"{{{MAM}}}result").get("id") for r in results] == sids[:2]
    fin = iq.find(f"{{{MAM}}}fin")
    assert fin.get("complete") is None
    s = fin.find(f"{{{RSM}}}set")
    assert s.findtext(f"{{{RSM}}}first") == sids[0]
    assert s.findtext(f"{{{RSM}}}last") == sids[1]
    assert s.find(f"{{{RSM}}}count") is None          # only for max=0 (below)

    # the next page, then the last page (empty <before/>), then flip-page
    mam_iq(bob, rsm(max=10, after=sids[1]))
    results, iq = collect(bob)
    assert bodies(results) == ["m2", "m3", "m4"]
    assert iq.find(f"{{{MAM}}}fin").get("complete") == "true"
    mam_iq(bob, rsm(max=2, before=None))
    results, iq = collect(bob)
    assert bodies(results) == ["m3", "m4"]
    mam_iq(bob, rsm(max=2, before=sids[3]))
    results, iq = collect(bob)
    assert bodies(results) == ["m1", "m2"]
    assert iq.find(f"{{{MAM}}}fin").get("complete") is None
    mam_iq(bob, rsm(max=2, before=sids[2]))
    results, iq = collect(bob)
    assert bodies(results) == ["m0", "m1"]
    assert iq.find(f"{{{MAM}}}fin").get("complete") == "true"
    mam_iq(bob, rsm(max=2, before=None) + f"<flip-page/>")
    results, iq = collect(bob)
    assert bodies(results) == ["m4", "m3"]

    # #extended: after-id/before-id/ids
    mam_iq(bob, form(after_id=sids[0], before_id=sids[4]))
    results, _ = collect(bob)
    assert bodies(results) == ["m1", "m2", "m3"]
    mam_iq(bob, form(ids=[sids[4], sids[1]]))
    results, _ = collect(bob)
    assert bodies(results) == ["m1", "m4"]
    # max=0: just the count
    mam_iq(bob, rsm(max=0))
    results, iq = collect(bob)
    assert results == [] and iq.find(f"{{{MAM}}}fin/{{{RSM}}}set/{{{RSM}}}count").text == "5"


def test_with_start_end_filters_and_self_messages(xmppd_server):
    bob = login(xmppd_server, "bob")
    bob.send("<presence/>")
    alice = login(xmppd_server, "alice")
    carol = login(xmppd_server, "carol")
    send_chat(alice, "bob@localhost", 2, "a")
    time.sleep(1.1)
    middle = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    send_chat(carol, "bob@localhost/r", 2, "c")
    send_chat(bob, "bob@localhost", 1, "self")
    messages(bob)
    mam_iq(bob, form(**{"with": "carol@localhost"}))
    assert bodies(collect(bob)[0]) == ["c0", "c1"]
    mam_iq(bob, form(**{"with": "alice@localhost/r"}))
    assert bodies(collect(bob)[0]) == ["a0", "a1"]
    mam_iq(bob, form(**{"with": "alice@localhost/other"}))
    assert bodies(collect(bob)[0]) == []
    mam_iq(bob, form(start=middle))
    assert bodies(collect(bob)[0]) == ["c0", "c1", "self0"]
    mam_iq(bob, form(end=middle))
    assert bodies(collect(bob)[0]) == ["a0", "a1"]
    # a message to oneself is archived once
    mam_iq(bob, form(**{"with": "bob@localhost"}))
    assert bodies(collect(bob)[0]) == ["self0"]


def test_pipelined_queries_are_never_interleaved(xmppd_server):
    bob = login(xmppd_server, "bob")
    alice = login(xmppd_server, "alice")
    send_chat(alice, "bob@localhost", 40)
    for i in range(4):
        mam_iq(bob, rsm(max=40), iq_id=f"p{i}", qid=f"q{i}")
    order = []
    while len([o for o in order if o[0] == "iq"]) < 4:
        el = bob.next()
        if el.tag == f"{C}iq":
            order.append(("iq", el.get("id")[1:]))
        else:
            order.append(("r", el.find(f"{{{MAM}}}result").get("queryid")[1:]))
    # 40 results of query i, then its iq result, then query i + 1
    expected = []
    for i in range(4):
        expected += [("r", str(i))] * 40 + [("iq", str(i))]
    assert order == expected


def test_what_is_archived(xmppd_server):
    bob = login(xmppd_server, "bob")
    bob.send("<presence/>")
    alice = login(xmppd_server, "alice")
    alice.send("<message to='bob@localhost' type='chat' id='1'><body>kept</body></message>")
    alice.send("<message to='bob@localhost' type='chat' id='2'>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    alice.send("<message to='bob@localhost' type='chat' id='3'><body>secret</body>"
               "<no-permanent-store xmlns='urn:xmpp:hints'/></message>")
    alice.send("<message to='bob@localhost' type='headline' id='4'><body>news</body></message>")
    alice.send("<message to='bob@localhost' id='5'><body>normal</body></message>")
    # a forged stanza-id claiming to be bob's archive is removed, then ours is added
    alice.send("<message to='bob@localhost' type='chat' id='6'><body>forged</body>"
               f"<stanza-id xmlns='{SID}' by='bob@localhost' id='fake'/></message>")
    sync(alice)
    got = {m.get("id"): m for m in messages(bob)}
    forged_ids = [s.get("id") for s in got["6"].findall(f"{{{SID}}}stanza-id")]
    assert len(forged_ids) == 1 and forged_ids[0] != "fake"
    assert got["2"].find(f"{{{SID}}}stanza-id") is None      # not archived: no stanza-id
    assert got["3"].find(f"{{{SID}}}stanza-id") is None
    mam_iq(bob)
    assert bodies(collect(bob)[0]) == ["kept", "normal", "forged"]
    mam_iq(alice)
    assert bodies(collect(alice)[0]) == ["kept", "normal", "forged"]


def test_hostile_queries_get_the_xeps_errors(xmppd_server):
    bob = login(xmppd_server, "bob")
    alice = login(xmppd_server, "alice")
    send_chat(alice, "bob@localhost", 3)
    cases = [
        (form(color="red"), "feature-not-implemented"),
        ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other"
         "</value></field></x>", "bad-request"),
        (form(start="yesterday"), "bad-request"),
        (form(end="2026-01-01T00:00:00"), "bad-request"),          # no zone
        (form(**{"with": "a@b@c"}), "jid-malformed"),
        (form(after_id="nope"), "item-not-found"),
        (form(ids=["nope"]), "item-not-found"),
        (form(ids=[str(i) for i in range(51)]), "bad-request"),
        (rsm(max="-1"), "bad-request"),
        (rsm(max="lots"), "bad-request"),
        (rsm(max="99999999999999999999"), "bad-request"),
        (rsm(after="nope"), "item-not-found"),
        (rsm(before="nope"), "item-not-found"),
        (rsm(after="x", before="y"), "bad-request"),
        (rsm(index="3"), "feature-not-implemented"),
        (rsm(max=1) + rsm(max=1), "bad-request"),
        ("<bogus xmlns='urn:x'/>", "bad-request"),
        (form(**{"with": "a@localhost"}) + form(), "bad-request"),
    ]
    for i, (body, condition) in enumerate(cases):
        mam_iq(bob, body, iq_id=f"h{i}")
        results, iq = collect(bob, iq_id=f"h{i}")
        assert results == [], body
        assert iq.get("type") == "error" and stanza_error(iq)[1] == condition, (body, iq)
    # someone else's archive: forbidden, no enumeration of what it holds
    mam_iq(alice, to="bob@localhost", iq_id="other")
    results, iq = collect(alice, iq_id="other")
    assert results == [] and stanza_error(iq) == ("auth", "forbidden")
    # page size capped by archive_max_page (50)
    send_chat(alice, "bob@localhost", 60, "x")
    mam_iq(bob, rsm(max=1000))
    results, iq = collect(bob)
    assert len(results) == 50 and iq.find(f"{{{MAM}}}fin").get("complete") is None
    # still alive and answering
    sync(bob)


def test_form_discovery_and_disco_features(xmppd_server):
    bob = login(xmppd_server, "bob")
    bob.send(f"<iq type='get' id='f'><query xmlns='{MAM}'/></iq>")
    iq = bob.next()
    assert iq.get("type") == "result"
    fields = {f.get("var"): f.get("type")
              for f in iq.iter("{jabber:x:data}field")}
    assert fields == {"FORM_TYPE": "hidden", "with": "jid-single", "start": "text-single",
                      "end": "text-single", "before-id": "text-single",
                      "after-id": "text-single", "ids": "list-multi"}
    bob.send("<iq type='get' id='d' to='bob@localhost'>"
             "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    iq = bob.next()
    feats = {f.get("var") for f in iq.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert {MAM, MAM + "#extended", SID} <= feats


def test_prefs_never_and_roster_default(xmppd_server):
    bob = login(xmppd_server, "bob")
    bob.send("<presence/>")
    alice = login(xmppd_server, "alice")
    carol = login(xmppd_server, "carol")
    bob.send(f"<iq type='get' id='p0'><prefs xmlns='{MAM}'/></iq>")
    assert reply(bob, "p0").find(f"{{{MAM}}}prefs").get("default") == "always"
    bob.send(f"<iq type='set' id='p1'><prefs xmlns='{MAM}' default='roster'>"
             "<always><jid>carol@localhost</jid></always><never/></prefs></iq>")
    iq = reply(bob, "p1")
    assert iq.get("type") == "result"
    assert iq.find(f"{{{MAM}}}prefs/{{{MAM}}}always/{{{MAM}}}jid").text == "carol@localhost"
    send_chat(alice, "bob@localhost", 1, "alice")
    send_chat(carol, "bob@localhost", 1, "carol")
    messages(bob)
    mam_iq(bob)
    assert bodies(collect(bob)[0]) == ["carol0"]
    for i, bad in enumerate(("<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>",
                             "<prefs xmlns='urn:xmpp:mam:2' default='always'><always>"
                             "<jid>@@</jid></always></prefs>",
                             "<prefs xmlns='urn:xmpp:mam:2' default='always'><x/></prefs>")):
        bob.send(f"<iq type='set' id='b{i}'>{bad}</iq>")
        iq = reply(bob, f"b{i}")
        assert iq.get("type") == "error", bad


def test_archive_survives_restart_and_kill(xmppd_server_factory, tmp_path):
    data = tmp_path / "d"
    server = xmppd_server_factory(data_dir=data)
    alice = login(server, "alice")
    login(server, "bob").close()
    send_chat(alice, "bob@localhost", 3, "before")
    alice.close()
    server.stop()
    server = xmppd_server_factory(data_dir=data)
    alice = login(server, "alice")
    send_chat(alice, "bob@localhost", 2, "after")
    time.sleep(0.5)
    server.proc.kill()        # kill -9: what was archived before it is on disk
    server.proc.wait()
    server = xmppd_server_factory(data_dir=data)

    async def fetch():
        bob = make_client("bob")
        try:
            await connect(bob, port=server.port)
            return [_body(m) async for m in bob.plugin["xep_0313"].iterate(rsm={"max": 10})]
        finally:
            bob.disconnect()
    got = asyncio.run(fetch())
    assert got == ["before0", "before1", "before2", "after0", "after1"]


def _archive_count(data_dir, owner):
    from xmppd.storage.archive import ArchiveStore
    from xmppd.storage.db import Database
    db = Database(str(data_dir / "xmppd.sqlite3"))
    try:
        return ArchiveStore(db).count(owner)
    finally:
        db.close()


def test_ctl_archive_purge_and_deluser(xmppd_server_factory, tmp_path):
    from test_ctl import ctl
    data = tmp_path / "d"
    server = xmppd_server_factory(data_dir=data)
    alice = login(server, "alice")
    login(server, "bob").close()
    send_chat(alice, "bob@localhost", 3)
    time.sleep(0.5)
    assert _archive_count(data, "bob@localhost") == 3
    assert _archive_count(data, "alice@localhost") == 3
    # --before a date in the past removes nothing; without it, everything
    r = ctl(data, "archive-purge", "--user", "bob", "--before", "2020-01-01")
    assert r.returncode == 0 and "purged 0" in r.stdout, r.stderr
    r = ctl(data, "archive-purge", "--user", "bob@localhost",
            "--before", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60)))
    assert r.returncode == 0 and "purged 3" in r.stdout, r.stderr
    mam_iq(alice)
    assert len(collect(alice)[0]) == 3           # alice's own archive is untouched
    r = ctl(data, "archive-purge", "--user", "bob", "--before", "yesterday")
    assert r.returncode != 0 and "not a date" in r.stderr
    assert ctl(data, "archive-purge").returncode != 0          # who? is required
    r = ctl(data, "deluser", "alice")
    assert r.returncode == 0, r.stderr
    assert _archive_count(data, "alice@localhost") == 0


def test_retention_expires_old_messages(xmppd_server_factory, tmp_path):
    conf = tmp_path / "x.toml"
    conf.write_text("archive_expires_after = 2\narchive_cleanup_interval = 1\n")
    data = tmp_path / "d"
    server = xmppd_server_factory("--config", conf, data_dir=data)
    alice = login(server, "alice")
    login(server, "bob").close()
    send_chat(alice, "bob@localhost", 2)
    time.sleep(0.5)
    assert _archive_count(data, "bob@localhost") == 2
    deadline = time.monotonic() + 10
    while _archive_count(data, "bob@localhost") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _archive_count(data, "bob@localhost") == 0


def test_archive_backpressure_slows_senders_and_drops_nothing(xmppd_server_factory, tmp_path):
    """A small archive_max_pending (rows waiting for the writer): a sender that outruns the
    writer is paused (reading from clients stops at half of it), never dropped: every message
    of a burst is archived for both accounts, and the metrics say the input paused. (Before
    back-pressure, most of this burst was dropped from the archive.)"""
    import re
    import socket as socketmod
    from test_c2s_raw import Raw
    conf = tmp_path / "c.toml"
    conf.write_text("archive_max_pending = 4000\n")   # pause at 2 000 rows; a 64 KiB read adds < 1 500
    server = xmppd_server_factory("--config", conf)
    bob = Raw(server.port)
    bob.login("bob")
    bob.send("<presence/>")
    alice = Raw(server.port)
    alice.login("alice")
    n = 20000
    alice.send("".join(f"<message to='bob@localhost' type='chat' id='b{i}'><body>burst {i}</body>"
                       "</message>" for i in range(n)))
    got = 0
    while got < n:
        el = bob.next(timeout=30)
        if el.tag.endswith("message"):
            got += 1
    for who, c in (("alice", alice), ("bob", bob)):
        c.send("<iq type='set' id='cnt'><query xmlns='urn:xmpp:mam:2'>"
               "<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set></query></iq>")
        while True:
            el = c.next(timeout=30)
            if el.get("id") == "cnt":
                break
        count = el.find(".//{http://jabber.org/protocol/rsm}count")
        assert count is not None and int(count.text) == n, (who, count)
    from test_websocket import http_port
    port = http_port(server)
    s = socketmod.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
    text = b""
    while chunk := s.recv(65536):
        text += chunk
    s.close()
    text = text.decode()
    assert float(re.search(r"^xmppd_archive_dropped_total (\S+)$", text, re.M).group(1)) == 0
    assert float(re.search(r"^xmppd_input_pauses_total (\S+)$", text, re.M).group(1)) >= 1
