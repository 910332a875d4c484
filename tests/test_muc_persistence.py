"""Persistent rooms survive a restart: config, affiliations with reasons, reserved nicks.

Two scansion conversations against two successive servers sharing one data directory;
temporary rooms must not come back.
"""
import asyncio
import time

from xmppd.testing.runner import run_script
from xmppd.testing.script import parse
from pgserver import backend, pg_cluster, pg_dsn  # noqa: F401 (fixtures: both storage backends)

HEADER = """
[Client] Romeo
	jid: user@localhost
	password: password

[Client] Juliet
	jid: user2@localhost
	password: password

-----
"""

BEFORE = "# before the restart\n" + HEADER + """
Romeo connects

Romeo sends:
	<presence to="vault@conference.localhost/Romeo">
		<x xmlns="http://jabber.org/protocol/muc"/>
	</presence>

Romeo receives:
	<message type='groupchat' from='vault@conference.localhost'><subject/></message>

Romeo sends:
	<iq id='config1' to='vault@conference.localhost' type='set'>
		<query xmlns='http://jabber.org/protocol/muc#owner'>
			<x xmlns='jabber:x:data' type='submit'>
				<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>
				<field var='muc#roomconfig_persistentroom'><value>1</value></field>
				<field var='muc#roomconfig_membersonly'><value>1</value></field>
			</x>
		</query>
	</iq>

Romeo receives:
	<iq id='config1' type='result' from='vault@conference.localhost'/>

Romeo sends:
	<iq id='aff1' to='vault@conference.localhost' type='set'>
		<query xmlns='http://jabber.org/protocol/muc#admin'>
			<item affiliation='member' jid="${Juliet's JID}" nick='Jules'/>
			<item affiliation='outcast' jid='tybalt@localhost'><reason>Stabby</reason></item>
		</query>
	</iq>

Romeo receives:
	<iq id='aff1' type='result' from='vault@conference.localhost'/>

# a temporary room, which must not survive
Romeo sends:
	<presence to="ephemeral@conference.localhost/Romeo">
		<x xmlns="http://jabber.org/protocol/muc"/>
	</presence>

Romeo receives:
	<message type='groupchat' from='ephemeral@conference.localhost'><subject/></message>

Romeo sends:
	<iq id='config2' to='ephemeral@conference.localhost' type='set'>
		<query xmlns='http://jabber.org/protocol/muc#owner'>
			<x xmlns='jabber:x:data' type='submit'/>
		</query>
	</iq>

Romeo receives:
	<iq id='config2' type='result' from='ephemeral@conference.localhost'/>

Romeo disconnects
"""

AFTER = "# after the restart\n" + HEADER + """
Juliet connects

# the reservation survived
Juliet sends:
	<iq id='nick1' to='vault@conference.localhost' type='get'>
		<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>
	</iq>

Juliet receives:
	<iq id='nick1' type='result' from='vault@conference.localhost'>
		<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'>
			<identity category='conference' name='Jules' type='text'/>
		</query>
	</iq>

# the room is not locked after a restart, and membership still admits her
Juliet sends:
	<presence to="vault@conference.localhost/Jules">
		<x xmlns="http://jabber.org/protocol/muc"/>
	</presence>

Juliet receives:
	<presence from='vault@conference.localhost/Jules'>
		<x xmlns='http://jabber.org/protocol/muc#user'>
			<item affiliation='member' role='participant' jid="${Juliet's full JID}"/>
			<status code='110'/>
		</x>
	</presence>

Romeo connects

# the owner and the ban list with its reason survived
Romeo sends:
	<iq id='list1' to='vault@conference.localhost' type='get'>
		<query xmlns='http://jabber.org/protocol/muc#admin'>
			<item affiliation='outcast'/>
		</query>
	</iq>

Romeo receives:
	<iq id='list1' type='result' from='vault@conference.localhost'>
		<query xmlns='http://jabber.org/protocol/muc#admin'>
			<item affiliation='outcast' jid='tybalt@localhost'>
				<reason>Stabby</reason>
			</item>
		</query>
	</iq>

# the member list with the reserved nick survived
Romeo sends:
	<iq id='list2' to='vault@conference.localhost' type='get'>
		<query xmlns='http://jabber.org/protocol/muc#admin'>
			<item affiliation='member'/>
		</query>
	</iq>

Romeo receives:
	<iq id='list2' type='result' from='vault@conference.localhost'>
		<query xmlns='http://jabber.org/protocol/muc#admin'>
			<item affiliation='member' jid="${Juliet's JID}" nick='Jules'/>
		</query>
	</iq>

# the temporary room is gone
Romeo sends:
	<iq id='info1' to='ephemeral@conference.localhost' type='get'>
		<query xmlns='http://jabber.org/protocol/disco#info'/>
	</iq>

Romeo receives:
	<iq id='info1' type='error' from='ephemeral@conference.localhost'>
		<error type='cancel'>
			<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
		</error>
	</iq>

Romeo disconnects

Juliet disconnects
"""


def _run(text, server):
    result = asyncio.run(run_script(parse(text), host=server.host, port=server.port, timeout=5))
    assert result.ok, f"{result.failure.report()}\n--- server log ---\n{server.log()[-3000:]}"


def test_persistent_room_survives_restart(xmppd_server_factory, tmp_path, backend):
    data = tmp_path / "muc-data"
    extra = backend.server_args(data)
    first = xmppd_server_factory(*extra, data_dir=data)
    backend.check_used(first)
    _run(BEFORE, first)
    first.stop()
    second = xmppd_server_factory(*extra, data_dir=data)
    _run(AFTER, second)


def test_tombstones_survive_restart_expire_and_are_bounded(xmppd_server_factory, tmp_path):
    """features/tombstones.py: stored with the rooms, lifted after muc_tombstone_expiry, capped."""
    from test_muc_features import MUC, MUC_OWNER, create_room, login, stanza, wait_for

    def is_reply(iq_id):
        return lambda el: el.get("id") == iq_id

    async def destroy(client, room):
        client.send(stanza(f"<iq type='set' id='d-{room}' to='{room}'><query xmlns='{MUC_OWNER}'>"
                           f"<destroy><reason>closed</reason></destroy></query></iq>"))
        _, r = await wait_for(client, is_reply(f"d-{room}"), "destroy result")
        assert r.get("type") == "result"

    async def join_outcome(client, room, nick):
        """'gone', or 'joined' (then leave again)."""
        client.send(stanza(f"<presence id='j' to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"))
        _, p = await wait_for(client, lambda el: el.tag.endswith("presence") and
                              el.get("from") == f"{room}/{nick}", "join answer")
        if p.get("type") == "error":
            assert "gone" in ET.tostring(p, encoding="unicode"), ET.tostring(p)
            return "gone"
        client.send(stanza(f"<presence type='unavailable' to='{room}/{nick}'/>"))
        return "joined"

    import xml.etree.ElementTree as ET
    data = tmp_path / "tomb-data"
    conf = tmp_path / "tomb.toml"
    expiry = 10
    conf.write_text(f"[muc]\nmuc_tombstone_expiry = {expiry}\nmuc_max_tombstones = 1\n")
    destroyed = []

    async def before(server):
        owner = await login(server, "tombowner")
        for room in ("t1@conference.localhost", "t2@conference.localhost"):
            await create_room(owner, room, [("muc#roomconfig_persistentroom", "1")])
            await destroy(owner, room)
            destroyed.append(time.time())
        await owner.disconnect()

    async def after(server):
        guest = await login(server, "tombguest")
        # the cap (1) dropped the older tombstone; the newer one survived the restart
        assert await join_outcome(guest, "t1@conference.localhost", "g") == "joined"
        assert time.time() - destroyed[-1] < expiry - 1, "restart too slow for this test"
        assert await join_outcome(guest, "t2@conference.localhost", "g") == "gone"
        await asyncio.sleep(max(0.0, destroyed[-1] + expiry + 1.5 - time.time()))
        assert await join_outcome(guest, "t2@conference.localhost", "g") == "joined"
        await guest.disconnect()

    first = xmppd_server_factory("--config", str(conf), data_dir=data)
    asyncio.run(before(first))
    first.stop()
    second = xmppd_server_factory("--config", str(conf), data_dir=data)
    asyncio.run(after(second))
