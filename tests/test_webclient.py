"""The built-in web client page: converse.js from npm in Debian's headless chromium.

converse.js logs in over WebSocket, and over BOSH, joins a room and posts; a slixmpp occupant
of the room receives the post. The assets come from tests/js/node_modules (web_client_assets
pointing at a local directory, the offline setup README describes).
"""
import asyncio
import ssl
import time
import urllib.request

import pytest
import slixmpp

from conftest import REPO_ROOT
from tools import require_command, require_node_module

ROOM = "lobby@conference.localhost"


def http_port(server):
    return int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))


@pytest.fixture
def web_server(xmppd_server_factory, tmp_path):
    dist = require_node_module("converse.js") / "dist"
    conf = tmp_path / "web.toml"
    conf.write_text(f'web_client_assets = "{dist}"\n')
    return xmppd_server_factory("--config", conf)


def browser(tmp_path):
    chromium = require_command("chromium", "`apt-get install chromium`")
    driver_path = require_command("chromedriver", "`apt-get install chromium-driver`")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1280,800",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def wait_for(driver, css, timeout=60):
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.webdriver.common.by import By
    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def slix(user):
    c = slixmpp.ClientXMPP(f"{user}@localhost/listener", "password")
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    c.enable_direct_tls = False
    for p in ("xep_0030", "xep_0004", "xep_0045"):
        c.register_plugin(p)
    return c


def test_page_is_configured_for_this_server(web_server):
    port = http_port(web_server)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        page = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
    assert '"muc_domain": "conference.localhost"' in page and '"locked_domain": "localhost"' in page
    assert "/converse.js/converse.min.js" in page
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/converse.js/converse.min.js", timeout=10) as r:
        assert r.status == 200 and len(r.read()) > 100_000
    # path traversal out of the assets folder is not served
    for bad in ("/converse.js/../../../../etc/passwd", "/converse.js/%2e%2e/%2e%2e/setup.cfg"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{bad}", timeout=10) as r:
                assert b"root:" not in r.read()
        except urllib.error.HTTPError as e:
            assert e.code in (403, 404)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", ["websocket", "bosh"])
def test_conversejs_in_chromium_posts_in_a_room(web_server, tmp_path, transport):
    port = http_port(web_server)
    driver = browser(tmp_path)

    async def main():
        listener = slix("listener")
        posts = asyncio.Queue()
        listener.add_event_handler(
            "groupchat_message", lambda m: m["body"] and m["mucnick"] != "listener" and posts.put_nowait(m))
        listener.connect("127.0.0.1", web_server.port)
        await listener.wait_until("session_start", timeout=10)
        muc = listener.plugin["xep_0045"]
        await muc.join_muc_wait(slixmpp.JID(ROOM), "listener", maxstanzas=0, timeout=15)
        form = await muc.get_room_config(ROOM, timeout=10)
        await muc.set_room_config(ROOM, form, timeout=10)      # an instant room, open to all
        loop = asyncio.get_running_loop()

        def browse():
            from selenium.webdriver.common.keys import Keys
            query = f"?room={ROOM}" + ("&transport=bosh" if transport == "bosh" else "")
            driver.get(f"http://127.0.0.1:{port}/{query}")
            wait_for(driver, "input[name=jid]").send_keys("alice")
            driver.find_element("css selector", "input[name=password]").send_keys("secret")
            driver.find_element("css selector", "button[type=submit]").click()
            area = wait_for(driver, "textarea.chat-textarea", 90)
            time.sleep(1)
            area.send_keys(f"hello from converse.js over {transport}")
            area.send_keys(Keys.ENTER)

        await loop.run_in_executor(None, browse)
        m = await asyncio.wait_for(posts.get(), 60)
        assert m["body"] == f"hello from converse.js over {transport}"
        assert m["from"].full == f"{ROOM}/alice"
        await asyncio.sleep(2)
        driver.save_screenshot(str(tmp_path / f"room-{transport}.png"))
        listener.disconnect()

    try:
        asyncio.run(main())
    finally:
        driver.quit()
    kind = "ws" if transport == "websocket" else "bosh"
    web_server.wait_for_log(rf"{kind} c\d+: connection opened|bosh c\d+: session \w+ opened")
