"""Direct TLS (XEP-0368): a second listener with TLS from the first byte (ALPN
xmpp-client), real logins over it, and a clear error for a TLS ClientHello on
the STARTTLS port."""
import asyncio
import re
import socket
import ssl

import pytest
import slixmpp
from OpenSSL import SSL

from scramclient import RawClient, ScramClient
from test_auth_clients import PASSWORD, adduser, login, close
from xmppd.transports.tls import DEV_CERT

DIRECT = re.compile(r"c2s direct TLS listening on \S+:(\d+)")


@pytest.fixture
def direct_server(xmppd_server_factory, tmp_path):
    data = tmp_path / "real"
    adduser(data, "alice")
    server = xmppd_server_factory("--c2s-direct-tls-port", "0", insecure_auth=False, data_dir=data)
    server.direct_port = int(server.wait_for_log(DIRECT.pattern).group(1))
    return server


def test_slixmpp_scram_sha256_plus_over_direct_tls(direct_server):
    cert = direct_server.data_dir / DEV_CERT

    async def scenario():
        c = slixmpp.ClientXMPP("alice@localhost/d", PASSWORD, sasl_mech="SCRAM-SHA-256-PLUS")
        c.enable_direct_tls, c.enable_starttls = True, False
        c.ca_certs = cert
        c.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2   # Python's ssl binds with tls-unique
        c.ssl_context.set_alpn_protocols(["xmpp-client"])
        assert await login(c, direct_server.direct_port)
        await close(c)

    asyncio.run(scenario())
    direct_server.wait_for_log(re.escape("authenticated as alice@localhost/d (SCRAM-SHA-256-PLUS tls-unique)"))


def test_raw_direct_tls_alpn_features_and_tls_exporter(direct_server):
    c = RawClient(direct_server.direct_port, direct_tls=True)
    assert c.conn.get_alpn_proto_negotiated() == b"xmpp-client"
    features = c.header()
    assert "starttls" not in features                  # already encrypted
    assert "<mechanism>SCRAM-SHA-256-PLUS</mechanism>" in features
    client = ScramClient("SHA-256", "alice", PASSWORD, "dn", gs2_header="p=tls-exporter,,",
                         cb_data=c.binding("tls-exporter"))
    assert c.sasl("SCRAM-SHA-256-PLUS", client) == ("success", True)
    c.close()


def test_direct_tls_without_alpn_still_works(direct_server):
    ctx = ssl.create_default_context(cafile=str(direct_server.data_dir / DEV_CERT))
    with socket.create_connection(("127.0.0.1", direct_server.direct_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() is None
            s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
                      b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
            data = b""
            while b"</stream:features>" not in data:
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
            assert b"SCRAM-SHA-256-PLUS" in data


@pytest.mark.parametrize("direct", [True, False])
def test_tls_client_hello_on_the_starttls_port_is_named(xmppd_server_factory, direct):
    args = ("--c2s-direct-tls-port", "0") if direct else ()
    server = xmppd_server_factory(*args)
    with pytest.raises((SSL.Error, AssertionError, OSError)):
        RawClient(server.port, direct_tls=True)
    if direct:
        port = server.wait_for_log(DIRECT.pattern).group(1)
        line = server.wait_for_log(r"stream error not-well-formed: TLS handshake on the STARTTLS port;"
                                   r" Direct TLS is on port (\d+)")
        assert line.group(1) == port
    else:
        server.wait_for_log(r"stream error not-well-formed: TLS handshake on the STARTTLS port;"
                            r" Direct TLS is not enabled here")


def test_direct_tls_port_off_by_default_and_validated(xmppd_server):
    assert "direct TLS listening" not in xmppd_server.log()
    from xmppd import config
    with pytest.raises(config.ConfigError, match="c2s_direct_tls_port"):
        config.load(overrides={"c2s_direct_tls_port": 70000})
    assert config.load().c2s_direct_tls_port == -1
