"""/metrics in the Prometheus text format, read with prometheus_client's own parsers.

Real traffic first (slixmpp clients log in, chat, fill a room and leave an
offline message), then the scrape must show it.
"""
import asyncio
import socket
import time
import urllib.request
from pathlib import Path

import slixmpp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from test_admin_commands import adduser
from test_slixmpp_core import make_client


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, accept=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("Content-Type"), r.read().decode()


def samples(text, parser=text_string_to_metric_families):
    out = {}
    for family in parser(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found, name, **labels):
    return found[(name, tuple(sorted(labels.items())))]


def test_metrics_scrape_parses_and_reflects_traffic(xmppd_server_factory, tmp_path):
    port = free_port()
    data = tmp_path / "data"
    adduser(data, "alice", "pw a")
    adduser(data, "bob", "pw b")
    adduser(data, "carol", "pw c")
    conf = tmp_path / "m.toml"
    conf.write_text(f"metrics_port = {port}\n")
    server = xmppd_server_factory("--config", conf, insecure_auth=False, data_dir=data)
    server.wait_for_log(rf"metrics listening on http://127\.0\.0\.1:{port}/metrics")

    async def scenario():
        alice = make_client("alice@localhost/a", "pw a")
        bob = make_client("bob@localhost/b", "pw b")
        bob.register_plugin("xep_0045")
        for c in (alice, bob):
            c.connect("127.0.0.1", server.port)
            await c.wait_until("session_start", timeout=10)
            c.send_presence()
        got = asyncio.get_running_loop().create_future()
        bob.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        alice.send_message(mto="bob@localhost", mbody="hi", mtype="chat")
        await asyncio.wait_for(got, 10)
        alice.send_message(mto="carol@localhost", mbody="for later", mtype="chat")  # offline
        await bob.plugin["xep_0045"].join_muc_wait("metrics@conference.localhost", "bob",
                                                   timeout=10)
        bob.send_message(mto="metrics@conference.localhost", mbody="room", mtype="groupchat")
        bad = make_client("alice@localhost/x", "wrong")
        failed = asyncio.get_running_loop().create_future()
        bad.add_event_handler("failed_auth", lambda *_: failed.done() or failed.set_result(1))
        bad.connect("127.0.0.1", server.port)
        await asyncio.wait_for(failed, 10)
        bad.disconnect()
        await alice.plugin["xep_0199"].ping(jid="localhost", timeout=10)
        await asyncio.sleep(1.5)     # the offline message's commit, two lag samples

        ctype, text = scrape(port)
        assert ctype.startswith("text/plain")
        found = samples(text)
        assert value(found, "xmppd_sessions") == 2
        assert value(found, "xmppd_online_users") == 2
        assert value(found, "xmppd_connections", state="bound") == 2
        assert value(found, "xmppd_muc_rooms") == 1
        assert value(found, "xmppd_muc_occupants") == 1
        assert value(found, "xmppd_muc_messages_total") >= 1
        assert value(found, "xmppd_offline_messages") == 1
        assert value(found, "xmppd_storage_writer_queue") == 0
        assert value(found, "xmppd_storage_commit_seconds_count") >= 1
        assert value(found, "xmppd_reactor_lag_seconds_count") >= 2
        # every collection of the cyclic GC is timed, by generation (young ones run often)
        assert value(found, "xmppd_gc_pause_seconds_count", generation="0") >= 1
        assert ("xmppd_gc_pause_seconds_count", (("generation", "2"),)) in found
        assert value(found, "xmppd_process_resident_memory_bytes") > 10_000_000
        assert value(found, "xmppd_uptime_seconds") > 0
        # counted on the hot path
        assert value(found, "xmppd_stanzas_total", direction="in", kind="message") >= 3
        assert value(found, "xmppd_stanzas_total", direction="in", kind="presence") >= 3
        assert value(found, "xmppd_stanzas_total", direction="in", kind="iq") >= 1
        assert value(found, "xmppd_stanzas_total", direction="out", kind="all") >= 3
        assert value(found, "xmppd_bytes_total", direction="in") > 1000
        assert value(found, "xmppd_bytes_total", direction="out") > 1000
        oks = {labels: v for (n, labels), v in found.items()
               if n == "xmppd_logins_total" and ("result", "ok") in labels}
        assert sum(oks.values()) == 2, oks       # by mechanism: slixmpp picks SCRAM
        assert all(dict(labels)["mechanism"].startswith("SCRAM") for labels in oks)
        failures = sum(v for (n, labels), v in found.items()
                       if n == "xmppd_logins_total" and ("result", "failed") in labels)
        assert failures == 1

        # a scraper asking for OpenMetrics gets it, and it parses with the strict parser
        ctype, text = scrape(port, "application/openmetrics-text; version=1.0.0")
        assert ctype.startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
        found = samples(text, om_parse)
        assert value(found, "xmppd_sessions") == 2
        for c in (alice, bob):
            c.disconnect()
            await c.wait_until("disconnected", timeout=5)

    asyncio.run(scenario())


def test_metrics_port_is_off_by_default_and_validated(xmppd_server_factory, tmp_path):
    server = xmppd_server_factory()
    assert "metrics listening" not in server.log()
    conf = tmp_path / "bad.toml"
    conf.write_text("metrics_port = 70000\n")
    bad = xmppd_server_factory("--config", conf, wait=False)
    assert bad.proc.wait(20) == 78
    assert "metrics_port" in bad.log()


def test_json_log_lines_for_login_and_logout(tmp_path):
    """twistd with log_format = "json": one JSON object per line; the login and logout lines
    carry jid, ip, mechanism and TLS version as fields, and no password."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_ROOT, server_env
    from test_c2s_raw import Raw

    port = free_port()
    conf = tmp_path / "j.toml"
    conf.write_text(f'log_format = "json"\nc2s_port = {port}\ninsecure_auth = true\n'
                    f'data_dir = "{tmp_path / "data"}"\n')
    proc = subprocess.Popen([str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=",
                             "xmppd", "--config", str(conf)], cwd=REPO_ROOT, env=server_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = Raw(port)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        c.open()
        c.starttls()
        assert c.auth("jason", "secret-pass").tag.endswith("success")
        c.open()
        c.bind("desk")
        c.close()
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert events, out
    login = [e for e in events if "authenticated as" in e.get("log_format", "")]
    assert len(login) == 1, out
    assert login[0]["jid"] == "jason@localhost/desk" and login[0]["ip"] == "127.0.0.1"
    assert login[0]["mechanism"].startswith(("PLAIN", "SCRAM")) and login[0]["tls"] == "TLSv1.3"
    logout = [e for e in events if "connection closed" in e.get("log_format", "")
              and e.get("jid") == "jason@localhost/desk"]
    assert len(logout) == 1 and logout[0]["ip"] == "127.0.0.1"
    assert "secret-pass" not in out


def http_get(port, path="/metrics", source="127.0.0.1", accept=None):
    """GET from a chosen loopback source address; (status, content type, body)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    c.request("GET", path, headers={"Accept": accept} if accept else {})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, r.getheader("Content-Type"), body


def test_metrics_on_the_http_listener_for_allowed_peers_only(xmppd_server_factory, tmp_path):
    """/metrics on the HTTP listener parses with the Prometheus and OpenMetrics parsers; a peer
    outside metrics_allow gets 403, there and on metrics_port; SIGHUP changes the list."""
    import signal
    conf = tmp_path / "m.toml"
    port = free_port()
    conf.write_text("http_port = 0\n")
    server = xmppd_server_factory("--config", conf)
    hport = int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))
    status, ctype, text = http_get(hport)
    assert status == 200 and ctype.startswith("text/plain"), (status, text)
    found = samples(text)
    assert value(found, "xmppd_sessions") == 0
    assert value(found, "xmppd_connections", state="bound") == 0
    assert value(found, "xmppd_reactor_lag_seconds_count") >= 0
    status, ctype, text = http_get(hport, accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert value(samples(text, om_parse), "xmppd_sessions") == 0
    # any loopback address is allowed by default
    assert http_get(hport, source="127.0.0.2")[0] == 200
    server.stop()

    conf.write_text(f'http_port = 0\nmetrics_port = {port}\nmetrics_allow = ["127.0.0.2"]\n')
    server = xmppd_server_factory("--config", conf)
    hport = int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))
    server.wait_for_log(rf"metrics listening on http://127\.0\.0\.1:{port}/metrics")
    for p in (hport, port):
        status, _, body = http_get(p, source="127.0.0.1")
        assert status == 403 and "xmppd_" not in body, (p, status, body)
        status, _, body = http_get(p, source="127.0.0.2")
        assert status == 200 and value(samples(body), "xmppd_sessions") == 0
    # the rest of the site is not affected
    assert http_get(hport, "/.well-known/host-meta", source="127.0.0.1")[0] == 200
    # reload: a network that holds 127.0.0.1 lets it in
    conf.write_text(f'http_port = 0\nmetrics_port = {port}\nmetrics_allow = ["127.0.0.0/30"]\n')
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded configuration .*metrics_allow")
    assert http_get(hport, source="127.0.0.1")[0] == 200


def test_metrics_allow_must_list_networks(xmppd_server_factory, tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('metrics_allow = ["localhost"]\n')
    bad = xmppd_server_factory("--config", conf, wait=False)
    assert bad.proc.wait(20) == 78
    assert "metrics_allow" in bad.log()


def test_bytes_count_websocket_and_bosh_traffic(xmppd_server):
    """xmppd_bytes_total counts the XMPP bytes of every transport: a WebSocket client's
    messages and a BOSH client's <body/> documents, each way, to the byte (no TCP client
    here; the scrapes themselves are not client traffic)."""
    from test_bosh import Bosh
    from test_websocket import FRAMING, WS

    hport = int(xmppd_server.wait_for_log(r"http listening on \S+:(\d+)").group(1))
    counted = {"in": 0, "out": 0}

    class CountingWS(WS):
        def send(self, text):
            counted["in"] += len(text.encode())
            super().send(text)

        async def recv_text(self, timeout=10):
            text = await super().recv_text(timeout)
            if text is not None:
                counted["out"] += len(text.encode())
            return text

    class CountingBosh(Bosh):
        def post(self, xml, timeout=20):
            status, data = super().post(xml, timeout)
            counted["in"] += len(xml.encode())
            counted["out"] += len(data)
            return status, data

    found = samples(http_get(hport)[2])
    assert value(found, "xmppd_bytes_total", direction="in") == 0
    assert value(found, "xmppd_bytes_total", direction="out") == 0

    async def main():
        ws = await CountingWS.connect(hport)
        jid = await ws.login("wsuser", "web")
        ws.send(f"<message xmlns='jabber:client' to='{jid}' type='chat'><body>{'x' * 3000}</body>"
                "</message>")
        await ws.recv_until(lambda e: e.tag.endswith("}message"))
        ws.send(f"<close xmlns='{FRAMING}'/>")
        await ws.closed()

        b = CountingBosh(hport)
        loop = asyncio.get_running_loop()
        full = await loop.run_in_executor(None, b.login, "boshuser")
        r = await loop.run_in_executor(
            None, b.send, f"<message xmlns='jabber:client' to='{full}' type='chat'>"
                          f"<body>{'y' * 5000}</body></message>")
        if r.find("{jabber:client}message") is None:     # not in the same answer: the next one
            r = await loop.run_in_executor(None, b.send)
        assert r.find("{jabber:client}message") is not None
        await loop.run_in_executor(None, lambda: b.send(type="terminate"))
    asyncio.run(main())
    time.sleep(0.3)
    found = samples(http_get(hport)[2])
    assert counted["in"] > 8000 and counted["out"] > 8000
    assert value(found, "xmppd_bytes_total", direction="in") == counted["in"]
    assert value(found, "xmppd_bytes_total", direction="out") == counted["out"]
