"""XEP-0363 HTTP File Upload end to end: slot over XMPP (slixmpp), PUT and GET over HTTP."""
import asyncio
import hashlib
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

import pytest
import slixmpp
from slixmpp.exceptions import IqError

NS = "urn:xmpp:http:upload:0"


def http_port(server):
    return int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))


def client(user):
    c = slixmpp.ClientXMPP(f"{user}@localhost/up", "password")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    c.enable_direct_tls = False
    c.register_plugin("xep_0030")
    return c


async def slot(c, name, size, ctype=None):
    iq = c.make_iq_get(ito="upload.localhost")
    req = ET.Element(f"{{{NS}}}request", filename=name, size=str(size))
    if ctype:
        req.set("content-type", ctype)
    iq.append(req)
    r = await iq.send(timeout=10)
    s = r.xml.find(f"{{{NS}}}slot")
    return s.find(f"{{{NS}}}put").get("url"), s.find(f"{{{NS}}}get").get("url")


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def upload_server(xmppd_server_factory, tmp_path):
    conf = tmp_path / "up.toml"
    conf.write_text("upload_max_size = 1000000\nupload_quota = 1500000\nupload_slot_timeout = 3\n")
    return xmppd_server_factory("--config", conf)


def test_upload_end_to_end(upload_server, tmp_path):
    server = upload_server
    port = http_port(server)
    data = os.urandom(700_000)

    async def main():
        c = client("alice")
        c.connect("127.0.0.1", server.port)
        await c.wait_until("session_start", timeout=10)
        info = await c.plugin["xep_0030"].get_info(jid="upload.localhost", timeout=10)
        assert NS in info["disco_info"]["features"]
        assert ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"]
        items = await c.plugin["xep_0030"].get_items(jid="localhost", timeout=10)
        assert "upload.localhost" in {i[0] for i in items["disco_items"]["items"]}
        loop = asyncio.get_running_loop()
        # slot, PUT, GET byte-identical
        put, get = await slot(c, "photo one.png", len(data), "image/png")
        assert put == get and put.startswith(f"http://127.0.0.1:{port}/upload/")
        status, _, _ = await loop.run_in_executor(None, lambda: http(
            "PUT", put, data, {"Content-Type": "image/png"}))
        assert status == 201
        status, headers, body = await loop.run_in_executor(None, lambda: http("GET", get))
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        assert headers["Content-Type"] == "image/png"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Disposition"].startswith("inline")
        # the slot is used: a second PUT is refused
        assert (await loop.run_in_executor(None, lambda: http("PUT", put, data, {"Content-Type": "image/png"})))[0] == 404
        # an active type is served as an attachment, never sniffed or run
        page = b"<html><script>alert(1)</script></html>"
        put, get = await slot(c, "page.html", len(page), "text/html")
        assert (await loop.run_in_executor(None, lambda: http("PUT", put, page, {"Content-Type": "text/html"})))[0] == 201
        status, headers, body = await loop.run_in_executor(None, lambda: http("GET", get))
        assert body == page and headers["Content-Disposition"].startswith("attachment")
        assert "sandbox" in headers["Content-Security-Policy"]
        # PUT header checks: wrong type, wrong length
        put, get = await slot(c, "a.txt", 5, "text/plain")
        assert (await loop.run_in_executor(None, lambda: http("PUT", put, b"hello", {"Content-Type": "text/html"})))[0] == 400
        assert (await loop.run_in_executor(None, lambda: http("PUT", put, b"hello!", {"Content-Type": "text/plain"})))[0] == 400
        assert (await loop.run_in_executor(None, lambda: http("PUT", put, b"hello", {"Content-Type": "text/plain"})))[0] == 201
        # too large: not-acceptable with the limit (XEP-0363 §5)
        with pytest.raises(IqError) as e:
            await slot(c, "big.bin", 2_000_000)
        assert e.value.condition == "not-acceptable"
        big = e.value.iq.xml.find(f"{{jabber:client}}error/{{{NS}}}file-too-large/{{{NS}}}max-file-size")
        assert big is not None and big.text == "1000000"
        # quota: 700 000 + 38 + 5 stored, another 900 000 does not fit in 1 500 000
        with pytest.raises(IqError) as e:
            await slot(c, "more.bin", 900_000)
        assert e.value.condition == "resource-constraint" and e.value.etype == "wait"
        # an expired slot (upload_slot_timeout = 3 s)
        put, get = await slot(c, "late.txt", 4)
        await asyncio.sleep(4)
        assert (await loop.run_in_executor(None, lambda: http("PUT", put, b"late")))[0] == 410
        c.disconnect()
        return get

    asyncio.run(main())
    # path traversal and foreign names
    base = f"http://127.0.0.1:{port}/upload"
    for bad in ("/../xmppd.sqlite3", "/%2e%2e/%2e%2e/xmppd.sqlite3", "/x/../../../etc/passwd",
                "/" + "0" * 32 + "/meta.json", "/..%2f..%2fxmppd.sqlite3/x"):
        status, _, body = http("GET", base + bad)
        assert status in (400, 404) and b"SQLite" not in body and b"root:" not in body
    assert "Traceback" not in server.log()


def test_files_go_with_the_account(upload_server):
    server = upload_server
    port = http_port(server)

    async def main():
        c = client("bob")
        c.connect("127.0.0.1", server.port)
        await c.wait_until("session_start", timeout=10)
        put, get = await slot(c, "note.txt", 4, "text/plain")
        loop = asyncio.get_running_loop()
        assert (await loop.run_in_executor(None, lambda: http("PUT", put, b"note", {"Content-Type": "text/plain"})))[0] == 201
        c.disconnect()
        return get

    get = asyncio.run(main())
    assert http("GET", get)[0] == 200
    subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(server.data_dir),
                    "deluser", "bob"], check=True, capture_output=True)
    assert http("GET", get)[0] == 404
    assert not any((server.data_dir / "uploads").iterdir())
