"""The server's own entity capabilities (XEP-0115 §6.3): <c/> in the stream features after
authentication, checked against slixmpp's verification-string code (xep_0115), answered at
node#ver, and changed by a reload that changes the disco#info answer (XEP-0157 forms)."""
import asyncio
import signal

from test_c2s_raw import Raw, stanza_error
from test_slixmpp_core import make_client

CAPS = "{http://jabber.org/protocol/caps}c"
INFO = "http://jabber.org/protocol/disco#info"


def advertised(port, resource="r"):
    """(node, ver) of the <c/> in the features after SASL; the features before it have none."""
    c = Raw(port)
    before = c.open()
    assert before.find(CAPS) is None
    c.auth("capsreader", "pw")
    after = c.open()
    c.bind(resource)
    caps = after.find(CAPS)
    assert caps is not None and caps.get("hash") == "sha-1", after
    return c, caps.get("node"), caps.get("ver")


async def slix_ver(client):
    info = await client.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
    return client.plugin["xep_0115"].generate_verstring(info["disco_info"], "sha-1")


def test_server_caps_in_stream_features(xmppd_server_factory, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('contact_info = ["abuse=mailto:abuse@example.org"]\n')
    server = xmppd_server_factory("--config", conf)
    raw, node, ver = advertised(server.port)

    async def scenario():
        c = make_client("checker@localhost/s", "pw")
        c.register_plugin("xep_0115")
        c.connect("127.0.0.1", server.port)
        await c.wait_until("session_start", timeout=10)
        assert await slix_ver(c) == ver

        raw.send(f"<iq type='get' id='n' to='localhost'><query xmlns='{INFO}' node='{node}#{ver}'/></iq>")
        el = raw.next()
        assert el.get("type") == "result", el.attrib
        assert el.find(f"{{{INFO}}}query").get("node") == f"{node}#{ver}"
        raw.send(f"<iq type='get' id='w' to='localhost'><query xmlns='{INFO}' node='{node}#nope'/></iq>")
        assert stanza_error(raw.next()) == ("cancel", "item-not-found")

        conf.write_text('contact_info = ["abuse=mailto:other@example.org"]\n')
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log(r"changed: .*contact_info")
        _, _, ver2 = advertised(server.port, "r2")
        assert ver2 != ver and ver2 == await slix_ver(c)
        raw.send(f"<iq type='get' id='o' to='localhost'><query xmlns='{INFO}' node='{node}#{ver}'/></iq>")
        assert stanza_error(raw.next()) == ("cancel", "item-not-found")
        c.disconnect()

    asyncio.run(scenario())
