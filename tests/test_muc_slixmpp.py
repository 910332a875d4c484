"""The MUC as a real client library sees it: slixmpp's xep_0045 against a subprocess xmppd.

Creates a room, configures it through the owner form, joins a second user, chats, and changes
affiliations and roles with the plugin's own calls, then reads the lists back.
"""
import asyncio
import ssl

import pytest

slixmpp = pytest.importorskip("slixmpp")

ROOM = "cave@conference.localhost"


def make_client(user):
    c = slixmpp.ClientXMPP(f"{user}@localhost/test", "password")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ("xep_0030", "xep_0004", "xep_0045", "xep_0199"):
        c.register_plugin(p)
    return c


async def scenario(port):
    alice, bob = make_client("alice"), make_client("bob")
    loop = asyncio.get_running_loop()
    bob_got = loop.create_future()
    alice_presences = []
    bob.add_event_handler("groupchat_message",
                          lambda m: m["body"] and not bob_got.done() and bob_got.set_result(m))
    alice.add_event_handler("groupchat_presence", lambda p: alice_presences.append(p))
    try:
        for c in (alice, bob):
            c.connect("127.0.0.1", port)
            await c.wait_until("session_start", timeout=10)
        muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]

        info = await alice.plugin["xep_0030"].get_info(jid="conference.localhost", timeout=5)
        assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]

        # create: owner, moderator, 201 + 110, and the subject arrives (join_muc_wait waits for it)
        pres, subject, occupants, history = await muc_a.join_muc_wait(
            slixmpp.JID(ROOM), "Alice", maxstanzas=0, timeout=10)
        assert {110, 201} <= set(pres["muc"]["status_codes"])
        assert pres["muc"]["affiliation"] == "owner" and pres["muc"]["role"] == "moderator"

        # configure through the form slixmpp fetched
        form = await muc_a.get_room_config(ROOM, timeout=5)
        fields = form.get_fields()
        assert "muc#roomconfig_membersonly" in fields
        assert "muc#roomconfig_presencebroadcast" in fields
        form.set_values({"muc#roomconfig_membersonly": False,
                         "muc#roomconfig_presencebroadcast": ["moderator", "participant"]})
        await muc_a.set_room_config(ROOM, form, timeout=5)

        # join and chat
        pres_b, _, occ_b, _ = await muc_b.join_muc_wait(slixmpp.JID(ROOM), "Bob", maxstanzas=0,
                                                         timeout=10)
        assert pres_b["muc"]["role"] == "participant"
        assert pres_b["muc"]["affiliation"] == "none"
        alice.send_message(mto=ROOM, mbody="hello room", mtype="groupchat")
        m = await asyncio.wait_for(bob_got, 5)
        assert str(m["from"]) == f"{ROOM}/Alice"
        assert m["body"] == "hello room"

        # affiliations: make Bob a member and an admin, read the lists back
        await muc_a.set_affiliation(ROOM, "member", jid=slixmpp.JID("bob@localhost"), timeout=5)
        members = await muc_a.get_affiliation_list(ROOM, "member", timeout=5)
        assert [str(j) for j in members] == ["bob@localhost"]
        await muc_a.set_affiliation(ROOM, "admin", jid=slixmpp.JID("bob@localhost"), timeout=5)
        admins = await muc_a.get_affiliation_list(ROOM, "admin", timeout=5)
        assert [str(j) for j in admins] == ["bob@localhost"]
        owners = await muc_a.get_affiliation_list(ROOM, "owner", timeout=5)
        assert [str(j) for j in owners] == ["alice@localhost"]

        # an admin is a moderator now
        moderators = await muc_a.get_roles_list(ROOM, "moderator", timeout=5)
        assert sorted(moderators) == ["Alice", "Bob"]

        # privilege checks surface as IqError: an admin cannot make owners
        with pytest.raises(slixmpp.exceptions.IqError) as exc:
            await muc_b.set_affiliation(ROOM, "owner", jid=slixmpp.JID("carol@localhost"),
                                        timeout=5)
        assert exc.value.condition == "forbidden"

        # back to a plain member, then banned: Bob is removed and listed with the reason
        await muc_a.set_affiliation(ROOM, "member", jid=slixmpp.JID("bob@localhost"), timeout=5)
        await muc_a.set_affiliation(ROOM, "outcast", jid=slixmpp.JID("bob@localhost"),
                                    reason="Enough", timeout=5)
        outcasts = await muc_a.get_affiliation_list(ROOM, "outcast", timeout=5)
        assert [str(j) for j in outcasts] == ["bob@localhost"]
        await asyncio.sleep(0.2)
        assert "Bob" not in muc_a.get_roster(ROOM)
        banned = [p for p in alice_presences
                  if p["from"].resource == "Bob" and p["type"] == "unavailable"]
        assert banned and 301 in banned[-1]["muc"]["status_codes"]
    finally:
        for c in (alice, bob):
            c.disconnect()
        for c in (alice, bob):
            try:
                await c.wait_until("disconnected", timeout=5)
            except Exception:
                pass


def test_slixmpp_muc_create_configure_chat_affiliations(xmppd_server):
    asyncio.run(scenario(xmppd_server.port))
