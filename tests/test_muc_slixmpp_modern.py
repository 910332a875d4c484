"""Modern MUC extensions as a real client library sees them: slixmpp's own xep_0421
(occupant-id), xep_0410 (self-ping) and xep_0425 (moderation) plugins against xmppd."""
import asyncio
import ssl

import pytest

slixmpp = pytest.importorskip("slixmpp")

from slixmpp.plugins.xep_0410.self_ping import PingStatus  # noqa: E402

ROOM = "modern@conference.localhost"


def make_client(user):
    c = slixmpp.ClientXMPP(f"{user}@localhost/test", "password")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    c.enable_direct_tls = False
    for p in ("xep_0030", "xep_0004", "xep_0045", "xep_0199", "xep_0410", "xep_0421",
              "xep_0424", "xep_0425"):
        c.register_plugin(p)
    return c


async def scenario(port):
    alice, bob = make_client("alice"), make_client("bob")
    loop = asyncio.get_running_loop()
    alice_msgs = asyncio.Queue()
    bob_moderated = loop.create_future()
    alice.add_event_handler("groupchat_message", alice_msgs.put_nowait)
    bob.add_event_handler("moderated_message",
                          lambda m: not bob_moderated.done() and bob_moderated.set_result(m))
    try:
        for c in (alice, bob):
            c.connect("127.0.0.1", port)
            await c.wait_until("session_start", timeout=10)
        muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]
        await muc_a.join_muc_wait(slixmpp.JID(ROOM), "Alice", maxstanzas=0, timeout=10)
        form = await muc_a.get_room_config(ROOM, timeout=5)
        await muc_a.set_room_config(ROOM, form, timeout=5)
        info = await alice.plugin["xep_0030"].get_info(jid=ROOM, timeout=5)
        features = info["disco_info"]["features"]
        for ns in ("urn:xmpp:occupant-id:0", "urn:xmpp:message-moderate:1",
                   "http://jabber.org/protocol/muc#self-ping-optimization"):
            assert ns in features

        pres_b, _, _, _ = await muc_b.join_muc_wait(slixmpp.JID(ROOM), "Bob", maxstanzas=0,
                                                     timeout=10)
        bob_id = pres_b["occupant-id"]["id"]
        assert bob_id

        # XEP-0421: Bob's message carries the same id as his presence, under any nick
        bob.send_message(mto=ROOM, mbody="one", mtype="groupchat")
        m = await asyncio.wait_for(alice_msgs.get(), 5)
        while m["body"] != "one":
            m = await asyncio.wait_for(alice_msgs.get(), 5)
        assert m["occupant-id"]["id"] == bob_id
        bob.send_presence(pto=f"{ROOM}/Robert")           # nick change
        await asyncio.sleep(0.3)
        bob.send_message(mto=ROOM, mbody="two", mtype="groupchat")
        m = await asyncio.wait_for(alice_msgs.get(), 5)
        while m["body"] != "two":
            m = await asyncio.wait_for(alice_msgs.get(), 5)
        assert str(m["from"]) == f"{ROOM}/Robert" and m["occupant-id"]["id"] == bob_id

        # XEP-0410: joined -> JOINED; after leaving -> DISCONNECTED (not-acceptable)
        ping = bob.plugin["xep_0410"]
        assert await ping.send_self_ping(slixmpp.JID(f"{ROOM}/Robert"), timeout=5) == \
            PingStatus.JOINED
        # XEP-0425: Alice (moderator) retracts; Bob's client sees a moderated retraction
        await alice.plugin["xep_0425"].moderate(slixmpp.JID(ROOM), "stanza-id-1", "spam",
                                                timeout=5)
        r = await asyncio.wait_for(bob_moderated, 5)
        assert r["retract"]["id"] == "stanza-id-1"
        assert str(r["retract"]["moderated"]["by"]) == f"{ROOM}/Alice"
        # ... and Bob (a participant) may not
        with pytest.raises(slixmpp.exceptions.IqError) as exc:
            await bob.plugin["xep_0425"].moderate(slixmpp.JID(ROOM), "stanza-id-2", timeout=5)
        assert exc.value.condition == "forbidden"

        muc_b.leave_muc(slixmpp.JID(ROOM), "Robert")
        await asyncio.sleep(0.3)
        assert await ping.send_self_ping(slixmpp.JID(f"{ROOM}/Robert"), timeout=5) == \
            PingStatus.DISCONNECTED
    finally:
        for c in (alice, bob):
            c.disconnect()
        for c in (alice, bob):
            try:
                await c.wait_until("disconnected", timeout=5)
            except Exception:
                pass


def test_slixmpp_occupant_id_self_ping_moderation(xmppd_server):
    asyncio.run(scenario(xmppd_server.port))
