"""Service administrators (``--admin``) have owner rights in every room and cannot be demoted."""
import asyncio

from xmppd.testing.runner import run_script
from xmppd.testing.script import parse

SCRIPT = """# service admin
[Client] Romeo
	jid: user@localhost
	password: password

[Client] Rosaline
	jid: user3@localhost
	password: password

-----

Romeo connects

Romeo sends:
	<presence to="office@conference.localhost/Romeo">
		<x xmlns="http://jabber.org/protocol/muc"/>
	</presence>

Romeo receives:
	<message type='groupchat' from='office@conference.localhost'><subject/></message>

Romeo sends:
	<iq id='cfg1' to='office@conference.localhost' type='set'>
		<query xmlns='http://jabber.org/protocol/muc#owner'>
			<x xmlns='jabber:x:data' type='submit'>
				<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>
				<field var='muc#roomconfig_membersonly'><value>1</value></field>
			</x>
		</query>
	</iq>

Romeo receives:
	<iq id='cfg1' type='result' from='office@conference.localhost'/>

Rosaline connects

# a members-only room lets the service admin in, as an owner
Rosaline sends:
	<presence to="office@conference.localhost/Rosaline">
		<x xmlns="http://jabber.org/protocol/muc"/>
	</presence>

Rosaline receives:
	<presence from='office@conference.localhost/Rosaline'>
		<x xmlns='http://jabber.org/protocol/muc#user'>
			<item affiliation='owner' role='moderator' jid="${Rosaline's full JID}"/>
			<status code='110'/>
		</x>
	</presence>

# she may configure the room
Rosaline sends:
	<iq id='form1' to='office@conference.localhost' type='get'>
		<query xmlns='http://jabber.org/protocol/muc#owner'/>
	</iq>

Rosaline receives:
	<iq id='form1' type='result' from='office@conference.localhost'>
		<query xmlns='http://jabber.org/protocol/muc#owner' scansion:strict='false'/>
	</iq>

# the room owner cannot ban or demote her
Romeo sends:
	<iq id='ban1' to='office@conference.localhost' type='set'>
		<query xmlns='http://jabber.org/protocol/muc#admin'>
			<item affiliation='outcast' jid="${Rosaline's JID}"/>
		</query>
	</iq>

Romeo receives:
	<iq id='ban1' type='error' from='office@conference.localhost'>
		<error type='cancel'>
			<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
		</error>
	</iq>

# she may kick the owner who created the room
Rosaline sends:
	<iq id='kick1' to='office@conference.localhost' type='set'>
		<query xmlns='http://jabber.org/protocol/muc#admin'>
			<item nick='Romeo' role='none'><reason>Closing time</reason></item>
		</query>
	</iq>

Romeo receives:
	<presence type='unavailable' from='office@conference.localhost/Romeo'>
		<x xmlns='http://jabber.org/protocol/muc#user'>
			<status code='307'/>
			<item affiliation='owner' role='none' jid="${Romeo's full JID}">
				<actor nick='Rosaline'/>
				<reason>Closing time</reason>
			</item>
			<status code='110'/>
		</x>
	</presence>

Rosaline receives:
	<iq id='kick1' type='result' from='office@conference.localhost'/>

Romeo disconnects

Rosaline disconnects
"""


def test_service_admin_is_owner_everywhere(xmppd_server_factory):
    server = xmppd_server_factory("--admin", "user3@localhost")
    result = asyncio.run(run_script(parse(SCRIPT), host=server.host, port=server.port, timeout=5))
    assert result.ok, f"{result.failure.report()}\n--- server log ---\n{server.log()[-3000:]}"
