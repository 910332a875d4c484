"""XEP-0157 contact addresses and XEP-0455 outage status in the server's disco#info,
read with slixmpp (its xep_0128 forms and its own xep_0455 plugin)."""
import asyncio
import signal

from test_slixmpp_core import make_client


def test_contact_addresses_and_outage_status_in_disco(xmppd_server_factory, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('admins = ["boss@localhost"]\n'
                    'contact_info = ["abuse=mailto:abuse@example.org", "support=xmpp:help@localhost",'
                    ' "support=https://example.org/help", "outage=https://status.example.org/x.json"]\n')
    server = xmppd_server_factory("--config", conf)

    async def scenario():
        c = make_client("reader@localhost/r", "pw")
        for p in ("xep_0128", "xep_0455"):
            c.register_plugin(p)
        c.connect("127.0.0.1", server.port)
        await c.wait_until("session_start", timeout=10)
        assert await c.plugin["xep_0455"].get_external_status_addresses(timeout=10) == \
            ["https://status.example.org/x.json"]
        info = await c.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
        forms = {f.get_values()["FORM_TYPE"][0]: f.get_values()
                 for f in info["disco_info"]["forms"]}
        serverinfo = forms["http://jabber.org/network/serverinfo"]
        assert serverinfo["abuse-addresses"] == ["mailto:abuse@example.org"]
        assert serverinfo["support-addresses"] == ["xmpp:help@localhost", "https://example.org/help"]
        assert serverinfo["admin-addresses"] == ["xmpp:boss@localhost"]   # from admins
        # a reload changes them
        conf.write_text('contact_info = ["admin=mailto:ops@example.org"]\n')
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log(r"changed: .*contact_info")
        info = await c.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
        forms = {f.get_values()["FORM_TYPE"][0]: f.get_values()
                 for f in info["disco_info"]["forms"]}
        assert list(forms) == ["http://jabber.org/network/serverinfo"]
        assert forms["http://jabber.org/network/serverinfo"]["admin-addresses"] == \
            ["mailto:ops@example.org"]
        c.disconnect()

    asyncio.run(scenario())


def test_no_contact_info_no_forms_and_bad_entries_refused(xmppd_server_factory, tmp_path):
    server = xmppd_server_factory()

    async def scenario():
        c = make_client("reader@localhost/r", "pw")
        c.register_plugin("xep_0128")
        c.connect("127.0.0.1", server.port)
        await c.wait_until("session_start", timeout=10)
        info = await c.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
        assert not info["disco_info"]["forms"]
        c.disconnect()

    asyncio.run(scenario())
    for bad in ('["admin"]', '["boss=mailto:x@y"]', '["admin=not a uri"]',
                '["outage=mailto:x@example.org"]'):
        conf = tmp_path / "bad.toml"
        conf.write_text(f"contact_info = {bad}\n")
        s = xmppd_server_factory("--config", conf, wait=False)
        assert s.proc.wait(20) == 78, bad
        assert "contact_info" in s.log()
