"""The HTTP listener: XEP-0156 discovery, CORS, hostile HTTP."""
import json
import socket
import time
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from conftest import XmppdServer

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"


def http_port(server):
    return int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))


def get(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_host_meta_xrd_and_json_name_the_websocket_endpoint(xmppd_server):
    port = http_port(xmppd_server)
    status, headers, body = get(f"http://127.0.0.1:{port}/.well-known/host-meta")
    assert status == 200 and headers["Content-Type"] == "application/xrd+xml"
    links = {l.get("rel"): l.get("href") for l in ET.fromstring(body).iter(XRD + "Link")}
    assert links["urn:xmpp:alt-connections:websocket"] == f"ws://127.0.0.1:{port}/xmpp-websocket"
    status, headers, body = get(f"http://localhost:{port}/.well-known/host-meta.json",
                                {"Origin": "https://app.example"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    links = {l["rel"]: l["href"] for l in json.loads(body)["links"]}
    assert links["urn:xmpp:alt-connections:websocket"] == f"ws://localhost:{port}/xmpp-websocket"
    status, headers, _ = get(f"http://127.0.0.1:{port}/.well-known/host-meta.json",
                             {"Origin": "https://app.example",
                              "Access-Control-Request-Method": "GET"}, method="OPTIONS")
    assert status == 204 and "GET" in headers["Access-Control-Allow-Methods"]
    assert get(f"http://127.0.0.1:{port}/nothing-here")[0] == 404


def test_cors_origins_setting_limits_browsers(xmppd_server_factory, tmp_path):
    conf = tmp_path / "web.toml"
    conf.write_text('http_cors_origins = ["https://chat.example.org"]\n')
    server = xmppd_server_factory("--config", conf)
    port = http_port(server)
    url = f"http://127.0.0.1:{port}/.well-known/host-meta.json"
    status, headers, _ = get(url, {"Origin": "https://chat.example.org"})
    assert headers["Access-Control-Allow-Origin"] == "https://chat.example.org"
    status, headers, _ = get(url, {"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers
    status, _, _ = get(url, {"Origin": "https://evil.example"}, method="OPTIONS")
    assert status == 403


def raw(port, data, read=True, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    if read:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    s.close()
    return out


def test_hostile_http_is_refused_and_the_server_keeps_serving(xmppd_server):
    port = http_port(xmppd_server)
    # a huge header line
    out = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") or out == b""
    # a WebSocket upgrade without the key / with a wrong version
    out = raw(port, b"GET /xmpp-websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Protocol: xmpp\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    out = raw(port, b"GET /xmpp-websocket HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.split(b"\r\n", 1)[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 426 Upgrade Required") \
        or out.startswith(b"HTTP/1.1 4")
    # slowloris: a request that never ends does not block others
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n")
    assert get(f"http://127.0.0.1:{port}/.well-known/host-meta")[0] == 200
    slow.close()
    assert "Traceback" not in xmppd_server.log()


def test_https_port_serves_the_same_site(xmppd_server_factory, tmp_path):
    import ssl
    conf = tmp_path / "tls.toml"
    conf.write_text("http_tls_port = 0\n")
    server = xmppd_server_factory("--config", conf)
    port = int(server.wait_for_log(r"https listening on \S+:(\d+)").group(1))
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "xmppd-dev-cert.pem"))
    ctx.check_hostname = False
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/.well-known/host-meta.json",
                                context=ctx, timeout=10) as r:
        links = {l["rel"]: l["href"] for l in json.loads(r.read())["links"]}
    assert links["urn:xmpp:alt-connections:websocket"] == f"wss://127.0.0.1:{port}/xmpp-websocket"
    assert links["urn:xmpp:alt-connections:xbosh"] == f"https://127.0.0.1:{port}/http-bind"
