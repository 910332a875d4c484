"""PEP (XEP-0163) on the PubSub core (XEP-0060 subset) over raw sockets: publish, items, access
models, publish-options preconditions, retract/purge/delete, subscriptions, caps +notify, limits."""
import base64
import hashlib
import xml.etree.ElementTree as ET

from personal_helpers import (EV, PS, PSO, error_of, events, iq, items, login, ok, publish, sync)
from test_c2s_raw import C

NS_PS = "http://jabber.org/protocol/pubsub"
GEO = "<geoloc xmlns='http://jabber.org/protocol/geoloc'><lat>1</lat></geoloc>"


def tune(n):
    return f"<tune xmlns='http://jabber.org/protocol/tune'><title>song {n}</title></tune>"


def caps_presence(features, node="http://example.org/client"):
    """A presence with a correct XEP-0115 sha-1 ver for ``features`` (identity client/pc)."""
    s = "client/pc//test<" + "".join(f + "<" for f in sorted(features))
    ver = base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()
    return (f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{node}' "
            f"ver='{ver}'/></presence>"), ver


def answer_caps(c, features):
    """Answer the server's disco#info caps query with ``features``."""
    while True:
        el = c.next()
        q = el.find("{http://jabber.org/protocol/disco#info}query")
        if el.tag == f"{C}iq" and el.get("type") == "get" and q is not None:
            break
        c.other = getattr(c, "other", []) + [el]
    assert el.get("from") == "localhost" and "#" in q.get("node")
    feats = "".join(f"<feature var='{f}'/>" for f in features)
    c.send(f"<iq type='result' id='{el.get('id')}' to='localhost'>"
           f"<query xmlns='http://jabber.org/protocol/disco#info' node='{q.get('node')}'>"
           f"<identity category='client' type='pc' name='test'/>{feats}</query></iq>")


def test_publish_autocreates_and_owner_reads_back(xmppd_server):
    alice = login(xmppd_server, "alice")
    res = ok(publish(alice, "http://jabber.org/protocol/tune", "t1", tune(1)))
    assert res.find(f"{PS}pubsub/{PS}publish/{PS}item").get("id") == "t1"
    got = ok(items(alice, "alice@localhost", "http://jabber.org/protocol/tune"))
    its = got.findall(f"{PS}pubsub/{PS}items/{PS}item")
    assert [i.get("id") for i in its] == ["t1"]
    assert its[0].find("{http://jabber.org/protocol/tune}tune/{http://jabber.org/protocol/tune}title").text == "song 1"
    # no 'to' means the own bare JID
    assert ok(items(alice, None, "http://jabber.org/protocol/tune")).find(f"{PS}pubsub/{PS}items/{PS}item") is not None
    # default max_items is 1 (XEP-0163): the second publish replaces the first
    ok(publish(alice, "http://jabber.org/protocol/tune", "t2", tune(2)))
    its = ok(items(alice, None, "http://jabber.org/protocol/tune")).findall(f"{PS}pubsub/{PS}items/{PS}item")
    assert [i.get("id") for i in its] == ["t2"]
    # a generated id when the publisher gives none
    res = ok(publish(alice, "urn:example:x", None, GEO))
    gen = res.find(f"{PS}pubsub/{PS}publish/{PS}item").get("id")
    assert gen and len(gen) >= 16


def test_access_models_for_other_accounts(xmppd_server):
    alice = login(xmppd_server, "alice")
    bob = login(xmppd_server, "bob")
    ok(publish(alice, "urn:example:presence", "1", GEO))      # default access model: presence
    ok(publish(alice, "urn:example:open", "1", GEO, {"access_model": "open"}))
    ok(publish(alice, "urn:example:wl", "1", GEO, {"access_model": "whitelist"}))
    ok(publish(alice, "urn:example:roster", "1", GEO, {"access_model": "roster"}))
    assert error_of(items(bob, "alice@localhost", "urn:example:presence")) == \
        ("auth", "not-authorized", "presence-subscription-required")
    assert error_of(items(bob, "alice@localhost", "urn:example:roster")) == \
        ("auth", "not-authorized", "not-in-roster-group")
    assert error_of(items(bob, "alice@localhost", "urn:example:wl")) == \
        ("cancel", "not-allowed", "closed-node")
    got = ok(items(bob, "alice@localhost", "urn:example:open"))
    item = got.find(f"{PS}pubsub/{PS}items/{PS}item")
    assert item.get("id") == "1" and item.get("publisher") == "alice@localhost"
    assert error_of(items(bob, "alice@localhost", "urn:example:none"))[1] == "item-not-found"
    # only the owner publishes, configures, deletes
    assert error_of(publish(bob, "urn:example:open", "2", GEO, to="alice@localhost"))[1] == "forbidden"
    assert error_of(iq(bob, f"<pubsub xmlns='{NS_PS}#owner'><delete node='urn:example:open'/></pubsub>",
                       to="alice@localhost"))[1] == "forbidden"
    assert error_of(iq(bob, f"<pubsub xmlns='{NS_PS}'><retract node='urn:example:open'><item id='1'/>"
                            f"</retract></pubsub>", to="alice@localhost"))[1] == "forbidden"


def test_publish_options_preconditions(xmppd_server):
    alice = login(xmppd_server, "alice")
    node = "eu.siacs.conversations.axolotl.devicelist"
    ok(publish(alice, node, "current", "<list xmlns='eu.siacs.conversations.axolotl'/>",
               {"access_model": "open"}))
    # same options again: met
    ok(publish(alice, node, "current", "<list xmlns='eu.siacs.conversations.axolotl'/>",
               {"access_model": "open"}))
    # a different access model: conflict + precondition-not-met (XEP-0060 §7.1.5)
    assert error_of(publish(alice, node, "current", "<list xmlns='eu.siacs.conversations.axolotl'/>",
                            {"access_model": "whitelist"})) == ("cancel", "conflict", "precondition-not-met")
    # max_items 'max' means the configured cap
    ok(publish(alice, "urn:example:many", "a", GEO, {"max_items": "max"}))
    for i in range(5):
        ok(publish(alice, "urn:example:many", f"i{i}", GEO))
    ids = [i.get("id") for i in ok(items(alice, None, "urn:example:many")).findall(f"{PS}pubsub/{PS}items/{PS}item")]
    assert ids == ["a", "i0", "i1", "i2", "i3", "i4"]
    ids = [i.get("id") for i in ok(items(alice, None, "urn:example:many", " max_items='2'")).findall(
        f"{PS}pubsub/{PS}items/{PS}item")]
    assert ids == ["i3", "i4"]
    got = ok(iq(alice, f"<pubsub xmlns='{NS_PS}'><items node='urn:example:many'><item id='i1'/>"
                       f"<item id='a'/><item id='nope'/></items></pubsub>", type="get"))
    assert [i.get("id") for i in got.findall(f"{PS}pubsub/{PS}items/{PS}item")] == ["a", "i1"]
    # bad forms: unknown field -> precondition-not-met; wrong FORM_TYPE / bad value -> bad-request
    assert error_of(publish(alice, node, "current", "<list xmlns='eu.siacs.conversations.axolotl'/>",
                            {"frobnicate": "1"}))[1:] == ("conflict", "precondition-not-met")
    assert error_of(publish(alice, "urn:example:new", "1", GEO, {"max_items": "lots"}))[1] == "bad-request"
    assert error_of(publish(alice, "urn:example:new", "1", GEO, {"access_model": "everyone"}))[1] == "bad-request"
    bad_type = ("<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:example:new'>"
                "<item id='1'>" + GEO + "</item></publish><publish-options>"
                "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                "<value>urn:wrong</value></field></x></publish-options></pubsub>")
    assert error_of(iq(alice, bad_type))[1] == "bad-request"
    # nothing was created by the refused publishes
    assert error_of(items(alice, None, "urn:example:new"))[1] == "item-not-found"


def test_malformed_publishes_and_id_abuse(xmppd_server):
    alice = login(xmppd_server, "alice")
    P = f"<pubsub xmlns='{NS_PS}'>"
    cases = [
        (P + "<publish/></pubsub>", ("bad-request", "nodeid-required")),
        (P + "<publish node='n'/></pubsub>", ("bad-request", "item-required")),
        (P + "<publish node='n'><item id='1'/></publish></pubsub>", ("bad-request", "payload-required")),
        (P + f"<publish node='n'><item id='1'>{GEO}{GEO}</item></publish></pubsub>", ("bad-request", "invalid-payload")),
        (P + f"<publish node='n'><item id='1'>{GEO}</item><item id='2'>{GEO}</item></publish></pubsub>",
         ("bad-request", "invalid-payload")),
        (P + f"<publish node='{'x' * 2000}'><item id='1'>{GEO}</item></publish></pubsub>", ("bad-request", None)),
        (P + f"<publish node='n'><item id='{'y' * 2000}'>{GEO}</item></publish></pubsub>", ("bad-request", None)),
        (P + f"<publish node='a&#9;b'><item id='1'>{GEO}</item></publish></pubsub>", ("bad-request", None)),
        (P + f"<publish node=''><item id='1'>{GEO}</item></publish></pubsub>", ("bad-request", "nodeid-required")),
        (P + "<frobnicate node='n'/></pubsub>", ("feature-not-implemented", "unsupported")),
        (P + "<items node='n'/><items node='m'/></pubsub>", ("bad-request", None)),
        (P + "</pubsub>", ("bad-request", None)),
        (P + "<retract node='n'/></pubsub>", ("bad-request", "item-required")),
        (P + "<retract node='n'><item id='zz'/></retract></pubsub>", ("item-not-found", None)),
        (P + "<subscribe node='n'/></pubsub>", ("bad-request", "jid-required")),
        (P + "<create/></pubsub>", ("not-acceptable", "nodeid-required")),
        (f"<pubsub xmlns='{NS_PS}#owner'><purge node='nope'/></pubsub>", ("item-not-found", None)),
        (f"<pubsub xmlns='{NS_PS}#owner'><configure node='nope'/></pubsub>", ("item-not-found", None)),
        (f"<pubsub xmlns='{NS_PS}#owner'><delete/></pubsub>", ("bad-request", "nodeid-required")),
    ]
    for body, want in cases:
        t = "get" if "<items" in body or "<configure" in body else "set"
        got = error_of(iq(alice, body, type=t))
        assert got[1:] == want, (body[:120], got)
    big = "<blob xmlns='urn:example:blob'>" + "z" * (130 * 1024) + "</blob>"
    assert error_of(publish(alice, "urn:example:big", "1", big))[1:] == ("not-acceptable", "payload-too-big")
    # the server is fine afterwards
    sync(alice)


def test_retract_purge_delete_and_configure(xmppd_server):
    alice = login(xmppd_server, "alice")
    ok(publish(alice, "urn:example:n", "a", GEO, {"max_items": "10"}))
    ok(publish(alice, "urn:example:n", "b", GEO))
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}'><retract node='urn:example:n'><item id='a'/></retract></pubsub>"))
    ids = [i.get("id") for i in ok(items(alice, None, "urn:example:n")).findall(f"{PS}pubsub/{PS}items/{PS}item")]
    assert ids == ["b"]
    form = ok(iq(alice, f"<pubsub xmlns='{NS_PS}#owner'><configure node='urn:example:n'/></pubsub>", type="get"))
    fields = {f.get("var"): f for f in form.iter("{jabber:x:data}field")}
    assert fields["pubsub#max_items"].find("{jabber:x:data}value").text == "10"
    assert fields["pubsub#access_model"].find("{jabber:x:data}value").text == "presence"
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}#owner'><configure node='urn:example:n'>"
                 "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                 "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
                 "<field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub>"))
    bob = login(xmppd_server, "bob")
    ok(items(bob, "alice@localhost", "urn:example:n"))
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}#owner'><purge node='urn:example:n'/></pubsub>"))
    assert ok(items(alice, None, "urn:example:n")).find(f"{PS}pubsub/{PS}items/{PS}item") is None
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}#owner'><delete node='urn:example:n'/></pubsub>"))
    assert error_of(items(alice, None, "urn:example:n"))[1] == "item-not-found"
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}'><create node='urn:example:made'/></pubsub>"))
    assert error_of(iq(alice, f"<pubsub xmlns='{NS_PS}'><create node='urn:example:made'/></pubsub>"))[1] == "conflict"
    affs = ok(iq(alice, f"<pubsub xmlns='{NS_PS}'><affiliations/></pubsub>", type="get"))
    assert {a.get("node") for a in affs.iter(f"{PS}affiliation")} == {"urn:example:made"}


def test_subscribers_get_notifications_and_last_item(xmppd_server):
    alice = login(xmppd_server, "alice", "<presence/>")
    bob = login(xmppd_server, "bob", "<presence/>")
    node = "urn:example:open"
    ok(publish(alice, node, "1", GEO, {"access_model": "open"}))
    assert error_of(iq(bob, f"<pubsub xmlns='{NS_PS}'><subscribe node='{node}' jid='carol@localhost'/>"
                            f"</pubsub>", to="alice@localhost"))[1:] == ("bad-request", "invalid-jid")
    res = ok(iq(bob, f"<pubsub xmlns='{NS_PS}'><subscribe node='{node}' jid='bob@localhost'/></pubsub>",
                to="alice@localhost"))
    assert res.find(f"{PS}pubsub/{PS}subscription").get("subscription") == "subscribed"
    # the last item on subscription
    got = events(bob)
    assert len(got) == 1 and got[0].get("from") == "alice@localhost"
    assert got[0].find(f"{EV}event/{EV}items/{EV}item").get("id") == "1"
    ok(publish(alice, node, "2", GEO))
    got = events(bob)
    assert [m.find(f"{EV}event/{EV}items/{EV}item").get("id") for m in got] == ["2"]
    assert got[0].get("type") == "headline"
    subs = ok(iq(bob, f"<pubsub xmlns='{NS_PS}'><subscriptions/></pubsub>", type="get", to="alice@localhost"))
    assert [s.get("node") for s in subs.iter(f"{PS}subscription")] == [node]
    # a non-open node refuses subscriptions
    ok(publish(alice, "urn:example:closed", "1", GEO))
    assert error_of(iq(bob, f"<pubsub xmlns='{NS_PS}'><subscribe node='urn:example:closed' jid='bob@localhost'/>"
                            f"</pubsub>", to="alice@localhost"))[1] == "not-authorized"
    # a new session of bob gets the last item on initial presence
    bob2 = login(xmppd_server, "bob", "<presence/>", resource="two")
    got = events(bob2)
    assert [m.find(f"{EV}event/{EV}items/{EV}item").get("id") for m in got] == ["2"]
    ok(iq(bob, f"<pubsub xmlns='{NS_PS}'><unsubscribe node='{node}' jid='bob@localhost'/></pubsub>",
          to="alice@localhost"))
    assert error_of(iq(bob, f"<pubsub xmlns='{NS_PS}'><unsubscribe node='{node}' jid='bob@localhost'/></pubsub>",
                       to="alice@localhost"))[1:] == ("unexpected-request", "not-subscribed")
    ok(publish(alice, node, "3", GEO))
    assert events(bob) == []
    # retract notifications go to subscribers too (notify_retract)
    ok(iq(bob2, f"<pubsub xmlns='{NS_PS}'><subscribe node='{node}' jid='bob@localhost/two'/></pubsub>",
          to="alice@localhost"))
    events(bob2)
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}'><retract node='{node}'><item id='3'/></retract></pubsub>"))
    got = events(bob2)
    assert got and got[0].find(f"{EV}event/{EV}items/{EV}retract").get("id") == "3"
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}#owner'><delete node='{node}'/></pubsub>"))
    got = events(bob2)
    assert got and got[0].find(f"{EV}event/{EV}delete").get("node") == node


def test_caps_notify_filters_own_resources_and_sends_last_item(xmppd_server):
    node = "http://jabber.org/protocol/tune"
    publisher = login(xmppd_server, "alice", "<presence/>", resource="pub")
    ok(publish(publisher, node, "t1", tune(1)))
    pres, ver = caps_presence(["http://jabber.org/protocol/disco#info", node + "+notify"])
    wants = login(xmppd_server, "alice", pres, resource="wants")
    answer_caps(wants, ["http://jabber.org/protocol/disco#info", node + "+notify"])
    got = events(wants)       # the last item once the caps are known
    assert [m.find(f"{EV}event/{EV}items/{EV}item").get("id") for m in got] == ["t1"]
    nope_pres, _ = caps_presence(["http://jabber.org/protocol/disco#info"], node="urn:other")
    nope = login(xmppd_server, "alice", nope_pres, resource="nope")
    answer_caps(nope, ["http://jabber.org/protocol/disco#info"])
    ok(publish(publisher, node, "t2", tune(2)))
    got = events(wants)
    assert [m.find(f"{EV}event/{EV}items/{EV}item").get("id") for m in got] == ["t2"]
    assert got[0].get("to") == "alice@localhost/wants"
    assert events(nope, 0.3) == [] and events(publisher, 0.3) == []
    # a second resource with the same ver: cached, no query (it gets the last item at once)
    again = login(xmppd_server, "alice", pres, resource="again")
    got = events(again)
    assert [m.find(f"{EV}event/{EV}items/{EV}item").get("id") for m in got] == ["t2"]
    assert not any(e.find("{http://jabber.org/protocol/disco#info}query") is not None
                   for e in getattr(again, "other", []))


def test_caps_with_a_wrong_hash_is_not_cached(xmppd_server):
    node = "http://jabber.org/protocol/tune"
    pub = login(xmppd_server, "alice", "<presence/>", resource="pub")
    ok(publish(pub, node, "t1", tune(1)))
    liar = login(xmppd_server, "alice", "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                                         "node='urn:x' ver='AAAAAAAAAAAAAAAAAAAAAAAAAAA='/></presence>",
                 resource="liar")
    answer_caps(liar, [node + "+notify"])
    assert len(events(liar)) == 1         # trusted for itself
    other = login(xmppd_server, "alice", "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                                          "node='urn:x' ver='AAAAAAAAAAAAAAAAAAAAAAAAAAA='/></presence>",
                  resource="other")
    answer_caps(other, [])                # asked again: the lie was not cached
    assert events(other, 0.3) == []


def test_node_limit(xmppd_server_factory, tmp_path):
    cfg = tmp_path / "limits.toml"
    cfg.write_text("pep_max_nodes_per_account = 3\npep_max_items_per_node = 2\n")
    server = xmppd_server_factory("--config", str(cfg))
    alice = login(server, "alice")
    for i in range(3):
        ok(publish(alice, f"urn:example:{i}", "1", GEO))
    assert error_of(publish(alice, "urn:example:3", "1", GEO))[1:] == ("not-allowed", "max-nodes-exceeded")
    ok(publish(alice, "urn:example:0", "2", GEO))          # existing nodes still take items
    ok(publish(alice, "urn:example:m", "1", GEO, {"max_items": "100"})) if False else None
    ok(iq(alice, f"<pubsub xmlns='{NS_PS}#owner'><configure node='urn:example:0'>"
                 "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                 "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
                 "<field var='pubsub#max_items'><value>100</value></field></x></configure></pubsub>"))
    for i in range(5):
        ok(publish(alice, "urn:example:0", f"x{i}", GEO))
    ids = [i.get("id") for i in ok(items(alice, None, "urn:example:0")).findall(f"{PS}pubsub/{PS}items/{PS}item")]
    assert ids == ["x3", "x4"]       # capped at pep_max_items_per_node


def test_disco_advertises_pep(xmppd_server):
    alice = login(xmppd_server, "alice")
    for to in ("alice@localhost", "localhost"):
        info = ok(iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", type="get", to=to))
        feats = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
        assert {NS_PS, NS_PS + "#publish-options", NS_PS + "#auto-create", "vcard-temp"} <= feats, to
    info = ok(iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", type="get", to="alice@localhost"))
    idents = {(i.get("category"), i.get("type")) for i in info.iter("{http://jabber.org/protocol/disco#info}identity")}
    assert ("pubsub", "pep") in idents and ("account", "registered") in idents
