"""Bookmarks over raw sockets: XEP-0402 kept in sync with XEP-0048 (private storage and legacy
PEP), legacy notifications to storage:bookmarks+notify resources, bad input, limits."""
from personal_helpers import EV, PS, error_of, events, iq, items, login, ok, publish
from test_pep import answer_caps, caps_presence

NS_B2 = "urn:xmpp:bookmarks:1"
PRIV = "jabber:iq:private"
LEGACY = "{storage:bookmarks}"


def private_set(c, confs):
    return iq(c, f"<query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'>{confs}</storage></query>")


def private_get(c):
    got = ok(iq(c, f"<query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'/></query>", type="get"))
    return got.find(f"{{{PRIV}}}query/{LEGACY}storage")


def test_legacy_and_pep_views_and_notifications(xmppd_server):
    pres, _ = caps_presence([f"{NS_B2}+notify", "storage:bookmarks+notify"])
    alice = login(xmppd_server, "alice", pres)
    answer_caps(alice, [f"{NS_B2}+notify", "storage:bookmarks+notify"])
    assert len(list(private_get(alice))) == 0                   # nothing yet: an empty <storage/>
    ok(private_set(alice, "<conference jid='a@conference.localhost' autojoin='1' name='A'><nick>al</nick>"
                          "<password>pw</password></conference>"
                          "<conference jid='not a jid@@' autojoin='true'/>"
                          "<url url='https://example.org' name='dropped'/>"))
    got = events(alice)
    nodes = sorted(m.find(f"{EV}event/{EV}items").get("node") for m in got)
    assert nodes == ["storage:bookmarks", NS_B2]                # the XEP-0402 item and the legacy view
    res = ok(items(alice, None, NS_B2))
    item = res.find(f"{PS}pubsub/{PS}items/{PS}item")
    conf = item.find(f"{{{NS_B2}}}conference")
    assert item.get("id") == "a@conference.localhost" and conf.get("autojoin") == "true"
    assert conf.find(f"{{{NS_B2}}}nick").text == "al" and conf.find(f"{{{NS_B2}}}password").text == "pw"
    res = ok(items(alice, None, "storage:bookmarks"))
    storage = res.find(f"{PS}pubsub/{PS}items/{PS}item/{LEGACY}storage")
    assert [c.get("jid") for c in storage] == ["a@conference.localhost"]
    # legacy PEP publish replaces the set
    ok(publish(alice, "storage:bookmarks", "current",
               "<storage xmlns='storage:bookmarks'><conference jid='b@conference.localhost' autojoin='false'/>"
               "</storage>"))
    assert [c.get("jid") for c in private_get(alice)] == ["b@conference.localhost"]
    # a client-created node config survives: the XEP-0402 node stays whitelist/never
    form = ok(iq(alice, f"<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{NS_B2}'/>"
                        "</pubsub>", type="get"))
    values = {f.get("var"): f.find("{jabber:x:data}value").text for f in form.iter("{jabber:x:data}field")}
    assert values["pubsub#access_model"] == "whitelist" and values["pubsub#send_last_published_item"] == "never"


def test_bad_bookmark_input(xmppd_server):
    alice = login(xmppd_server, "alice")
    bob = login(xmppd_server, "bob")
    assert error_of(publish(alice, "storage:bookmarks", "current", "<other xmlns='urn:x'/>"))[1:] == \
        ("bad-request", "invalid-payload")
    assert error_of(iq(alice, f"<query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'/>"
                              f"<storage xmlns='storage:bookmarks'/></query>"))[1] == "not-acceptable"
    assert error_of(items(bob, "alice@localhost", "storage:bookmarks"))[1] == "not-allowed"
    assert error_of(iq(bob, f"<query xmlns='{PRIV}'><storage xmlns='storage:bookmarks'/></query>",
                       type="get", to="alice@localhost"))[1] == "forbidden"
    many = "".join(f"<conference jid='r{i}@conference.localhost'/>" for i in range(300))
    assert error_of(private_set(alice, many))[1] == "not-acceptable"
    assert len(list(private_get(alice))) == 0


# What Gajim 1.7 (nbxmpp's NativeBookmarks) sends with every bookmark it stores.
GAJIM_BOOKMARK_OPTIONS = {"notify_delete": "true", "notify_retract": "true", "persist_items": "true",
                          "max_items": "max", "access_model": "whitelist",
                          "send_last_published_item": "never"}


def test_gajim_uses_xep_0402_and_its_publish_options_match(xmppd_server):
    """Gajim picks XEP-0402 only when the account advertises #compat-pep and pubsub#config-node-max
    (XEP-0060's feature for max_items='max'); otherwise it falls back to private storage. Its publish
    with the options above must pass the precondition checks on a fresh account and on the node
    the server made from a private-storage set, and both views must see the bookmark."""
    alice = login(xmppd_server, "alice")
    info = ok(iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", type="get",
                 to="alice@localhost"))
    features = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert {f"{NS_B2}#compat-pep", "http://jabber.org/protocol/pubsub#config-node-max"} <= features
    ok(publish(alice, NS_B2, "a@conference.localhost",
               f"<conference xmlns='{NS_B2}' autojoin='true'><nick>al</nick></conference>",
               GAJIM_BOOKMARK_OPTIONS))
    assert [c.get("jid") for c in private_get(alice)] == ["a@conference.localhost"]
    bob = login(xmppd_server, "bob")
    ok(private_set(bob, "<conference jid='b@conference.localhost' autojoin='true'/>"))
    ok(publish(bob, NS_B2, "c@conference.localhost", f"<conference xmlns='{NS_B2}'/>",
               GAJIM_BOOKMARK_OPTIONS))
    assert sorted(c.get("jid") for c in private_get(bob)) == ["b@conference.localhost",
                                                              "c@conference.localhost"]
