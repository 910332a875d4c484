"""Personal data with a real client library (slixmpp 1.17) and its own plugins: vCard (xep_0054),
avatars (xep_0084, xep_0153), PEP (xep_0060, xep_0163) incl. Gajim's OMEMO device-list exchange,
bookmarks (xep_0048 over xep_0049 and xep_0223, xep_0402), private storage (xep_0049)."""
import asyncio
import hashlib
import ssl

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

PLUGINS = ("xep_0030", "xep_0004", "xep_0045", "xep_0048", "xep_0049", "xep_0054", "xep_0060",
           "xep_0084", "xep_0153", "xep_0163", "xep_0223", "xep_0402")
IMAGE = hashlib.sha256(b"avatar").digest() * 40
OMEMO = "eu.siacs.conversations.axolotl"
DEVICELIST = OMEMO + ".devicelist"


def client(user, resource="test", skip=()):
    c = slixmpp.ClientXMPP(f"{user}@localhost/{resource}", "pw")
    c.enable_direct_tls = False
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    for p in PLUGINS:
        if p not in skip:
            c.register_plugin(p)
    return c


async def online(port, *clients):
    for c in clients:
        c.connect("127.0.0.1", port)
        await c.wait_until("session_start", timeout=10)


async def close(*clients):
    for c in clients:
        c.disconnect()
        await c.wait_until("disconnected", timeout=5)


def publish_options(c, **fields):
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
    for k, v in fields.items():
        form.add_field(var=f"pubsub#{k}", value=v)
    return form


def devicelist(*ids):
    lst = ET.Element(f"{{{OMEMO}}}list")
    for i in ids:
        ET.SubElement(lst, f"{{{OMEMO}}}device", id=str(i))
    return lst


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def test_vcard_and_vcard_avatar(xmppd_server):
    async def scenario():
        alice, bob = client("alice"), client("bob")
        await online(xmppd_server.port, alice, bob)
        vcard = alice.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Alice Liddell"
        vcard["NICKNAME"] = "al"
        await alice.plugin["xep_0054"].publish_vcard(vcard, timeout=10)
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=10)
        assert got["vcard_temp"]["FN"] == "Alice Liddell"
        assert got["vcard_temp"]["NICKNAME"] == ["al"]
        # XEP-0153 as slixmpp does it: set the vCard PHOTO (keeps the rest of the vCard)
        await alice.plugin["xep_0153"].set_avatar(avatar=IMAGE, mtype="image/png", timeout=10)
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=10)
        assert got["vcard_temp"]["PHOTO"]["BINVAL"] == IMAGE
        assert got["vcard_temp"]["FN"] == "Alice Liddell"
        # ... and it is the XEP-0084 avatar too (XEP-0398)
        sha1 = hashlib.sha1(IMAGE).hexdigest()
        item = await bob.plugin["xep_0084"].retrieve_avatar("alice@localhost", sha1, timeout=10)
        assert item["pubsub"]["items"]["item"]["avatar_data"]["value"] == IMAGE
        with_error = None
        try:
            await bob.plugin["xep_0054"].get_vcard("nobody@localhost", cached=False, timeout=10)
        except IqError as e:
            with_error = e.iq["error"]["condition"]
        assert with_error == "service-unavailable"
        await close(alice, bob)
    run(scenario())


def test_pep_avatar_shows_in_vcard_and_muc_presence(xmppd_server):
    room = "tea@conference.localhost"

    async def scenario():
        # alice's client does XEP-0084 only (no XEP-0153 <photo/> of its own): the server adds the hash
        alice, bob = client("alice", skip=("xep_0153",)), client("bob")
        await online(xmppd_server.port, alice, bob)
        sha1 = hashlib.sha1(IMAGE).hexdigest()
        await alice.plugin["xep_0084"].publish_avatar(
            IMAGE, options=publish_options(alice, access_model="open"), timeout=10)
        await alice.plugin["xep_0084"].publish_avatar_metadata(
            [{"id": sha1, "type": "image/png", "bytes": len(IMAGE)}],
            options=publish_options(alice, access_model="open"), timeout=10)
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=10)
        assert got["vcard_temp"]["PHOTO"]["BINVAL"] == IMAGE
        assert got["vcard_temp"]["PHOTO"]["TYPE"] == "image/png"
        # a MUC occupant sees the other occupant's hash in the room presence
        hashes = {}
        seen = asyncio.get_running_loop().create_future()

        def on_presence(p):
            if p["from"].bare == room:
                hashes[p["from"].resource] = p["vcard_temp_update"]["photo"]
                if "Alice" in hashes and not seen.done():
                    seen.set_result(True)
        bob.add_event_handler("groupchat_presence", on_presence)
        await alice.plugin["xep_0045"].join_muc_wait(slixmpp.JID(room), "Alice", maxstanzas=0, timeout=10)
        form = await alice.plugin["xep_0045"].get_room_config(room, timeout=10)
        await alice.plugin["xep_0045"].set_room_config(room, form, timeout=10)
        await bob.plugin["xep_0045"].join_muc_wait(slixmpp.JID(room), "Bob", maxstanzas=0, timeout=10)
        await asyncio.wait_for(seen, 10)
        assert hashes["Alice"] == sha1
        # ... and fetches the avatar through the room, as clients do for occupants (XEP-0153 §3.2)
        got = await bob.plugin["xep_0054"].get_vcard(f"{room}/Alice", cached=False, timeout=10)
        assert got["vcard_temp"]["PHOTO"]["BINVAL"] == IMAGE
        await close(alice, bob)
    run(scenario())


def test_omemo_device_list_exchange_as_gajim_does_it(xmppd_server):
    """Gajim publishes its device list and bundle with publish-options access_model=open;
    the contact fetches them, subscribes, and hears of a new device."""
    async def scenario():
        alice, bob = client("alice", "gajim"), client("bob", "gajim")
        await online(xmppd_server.port, alice, bob)
        for c in (alice, bob):
            c.send_presence()              # notifications to a bare JID go to available resources
        ps_a, ps_b = alice.plugin["xep_0060"], bob.plugin["xep_0060"]
        await ps_a.publish(None, DEVICELIST, id="current", payload=devicelist(1111),
                           options=publish_options(alice, access_model="open"), timeout=10)
        bundle = ET.Element(f"{{{OMEMO}}}bundle")
        ET.SubElement(bundle, f"{{{OMEMO}}}signedPreKeyPublic", signedPreKeyId="1").text = "AAAA"
        await ps_a.publish(None, f"{OMEMO}.bundles:1111", id="current", payload=bundle,
                           options=publish_options(alice, access_model="open"), timeout=10)
        res = await ps_b.get_items("alice@localhost", DEVICELIST, timeout=10)
        items = list(res["pubsub"]["items"])
        assert len(items) == 1 and items[0]["id"] == "current"
        ids = [d.get("id") for d in items[0].xml.iter(f"{{{OMEMO}}}device")]
        assert ids == ["1111"]
        res = await ps_b.get_items("alice@localhost", f"{OMEMO}.bundles:1111", timeout=10)
        assert list(res["pubsub"]["items"])[0].xml.find(f"{{{OMEMO}}}bundle") is not None
        # subscribe, then alice adds a device: bob is notified
        news = asyncio.Queue()
        bob.add_event_handler("pubsub_publish", lambda m: news.put_nowait(m))
        await ps_b.subscribe("alice@localhost", DEVICELIST, timeout=10)
        first = await asyncio.wait_for(news.get(), 10)    # the last item, on subscription
        assert first["pubsub_event"]["items"]["node"] == DEVICELIST
        await ps_a.publish(None, DEVICELIST, id="current", payload=devicelist(1111, 2222),
                           options=publish_options(alice, access_model="open"), timeout=10)
        msg = await asyncio.wait_for(news.get(), 10)
        ids = [d.get("id") for d in msg["pubsub_event"]["items"]["item"].xml.iter(f"{{{OMEMO}}}device")]
        assert ids == ["1111", "2222"] and msg["from"] == "alice@localhost"
        # a publish whose preconditions do not hold is refused (XEP-0060 §7.1.5)
        try:
            await ps_a.publish(None, DEVICELIST, id="current", payload=devicelist(3),
                               options=publish_options(alice, access_model="whitelist"), timeout=10)
            raise AssertionError("precondition not checked")
        except IqError as e:
            assert e.iq["error"]["condition"] == "conflict"
        await close(alice, bob)
    run(scenario())


def test_bookmarks_in_sync_across_apis(xmppd_server):
    room1, room2 = "one@conference.localhost", "two@conference.localhost"

    async def scenario():
        legacy, modern = client("alice", "legacy"), client("alice", "modern")
        await online(xmppd_server.port, legacy, modern)
        # XEP-0048 in private storage (Gajim, profanity)
        storage = legacy.plugin["xep_0048"].stanza.Bookmarks()
        storage.add_conference(room1, "Al", name="Room One", autojoin=True)
        await legacy.plugin["xep_0048"].set_bookmarks(storage, method="xep_0049", timeout=10)
        # ... is seen over XEP-0402
        res = await modern.plugin["xep_0060"].get_items(None, "urn:xmpp:bookmarks:1", timeout=10)
        items = list(res["pubsub"]["items"])
        assert [i["id"] for i in items] == [room1]
        conf = items[0]["conference"]
        assert conf["name"] == "Room One" and conf["nick"] == "Al" and conf["autojoin"] is True
        # XEP-0402 publish with the XEP's publish-options
        item = modern.plugin["xep_0402"].stanza.Conference()
        item["name"], item["nick"], item["autojoin"] = "Room Two", "Alice", False
        await modern.plugin["xep_0060"].publish(
            None, "urn:xmpp:bookmarks:1", id=room2, payload=item,
            options=publish_options(modern, persist_items="true", max_items="max",
                                    send_last_published_item="never", access_model="whitelist"),
            timeout=10)
        # ... is seen in private storage and over legacy PEP (XEP-0223)
        res = await legacy.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
        confs = {str(c["jid"]): c for c in res["private"]["bookmarks"]["conferences"]}
        assert set(confs) == {room1, room2}
        assert confs[room2]["nick"] == "Alice" and confs[room2]["autojoin"] is False
        res = await legacy.plugin["xep_0048"].get_bookmarks(method="xep_0223", timeout=10)
        confs = {str(c["jid"]) for c in res["pubsub"]["items"]["item"]["bookmarks"]["conferences"]}
        assert confs == {room1, room2}
        # removing one through XEP-0048 retracts it from XEP-0402
        storage = legacy.plugin["xep_0048"].stanza.Bookmarks()
        storage.add_conference(room2, "Alice", name="Room Two", autojoin=False)
        await legacy.plugin["xep_0048"].set_bookmarks(storage, method="xep_0223", timeout=10)
        res = await modern.plugin["xep_0060"].get_items(None, "urn:xmpp:bookmarks:1", timeout=10)
        assert [i["id"] for i in res["pubsub"]["items"]] == [room2]
        # other accounts see nothing
        bob = client("bob")
        await online(xmppd_server.port, bob)
        try:
            await bob.plugin["xep_0060"].get_items("alice@localhost", "urn:xmpp:bookmarks:1", timeout=10)
            raise AssertionError("bookmarks leaked")
        except IqError as e:
            assert e.iq["error"]["condition"] == "not-allowed"
        await close(legacy, modern, bob)
    run(scenario())


def test_private_storage_plugin(xmppd_server):
    async def scenario():
        alice = client("alice")
        await online(xmppd_server.port, alice)
        prefs = ET.fromstring("<prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs>")
        from slixmpp.xmlstream import ElementBase, register_stanza_plugin
        from slixmpp.plugins.xep_0049.stanza import PrivateXML

        class Prefs(ElementBase):
            name, namespace, plugin_attrib = "prefs", "urn:example:prefs", "prefs"
        register_stanza_plugin(PrivateXML, Prefs)
        await alice.plugin["xep_0049"].store(Prefs(prefs), timeout=10)
        res = await alice.plugin["xep_0049"].retrieve("prefs", timeout=10)
        assert res["private"]["prefs"].xml.find("{urn:example:prefs}theme").text == "dark"
        await close(alice)
    run(scenario())
