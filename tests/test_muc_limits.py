"""Service-wide MUC limits from the config file: rooms per creator (admins exempt)."""
import asyncio
import xml.etree.ElementTree as ET

from xmppd.testing.client import Client

MUC = "http://jabber.org/protocol/muc"


async def _join(client, room):
    client.send(ET.fromstring(f"<presence xmlns='jabber:client' to='{room}@conference.localhost/N'>"
                              f"<x xmlns='{MUC}'/></presence>"))
    while True:
        el = await client.next_stanza(5)
        assert el is not None, f"no answer to the join of {room}"
        if el.tag == "{jabber:client}presence" and el.get("from", "").startswith(room + "@"):
            return el


async def scenario(port):
    user = Client("U", "user@localhost", "password", "127.0.0.1", port)
    admin = Client("A", "boss@localhost", "password", "127.0.0.1", port)
    await user.connect()
    await admin.connect()
    for room in ("one", "two"):
        assert (await _join(user, room)).get("type") is None
    refused = await _join(user, "three")
    assert refused.get("type") == "error"
    err = refused.find("{jabber:client}error")
    assert err.get("type") == "wait"
    assert err.find("{urn:ietf:params:xml:ns:xmpp-stanzas}resource-constraint") is not None
    # joining existing rooms is not creating
    assert (await _join(admin, "one")).get("type") in (None, "error")
    for room in ("a1", "a2", "a3"):
        assert (await _join(admin, room)).get("type") is None   # admins are exempt
    await user.disconnect()
    await admin.disconnect()


def test_rooms_per_creator_limit(xmppd_server_factory, tmp_path):
    conf = tmp_path / "xmppd.toml"
    conf.write_text("[muc]\nmuc_max_rooms_per_creator = 2\nadmins = ['boss@localhost']\n")
    server = xmppd_server_factory("--config", str(conf))
    asyncio.run(scenario(server.port))
