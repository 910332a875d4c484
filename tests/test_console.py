"""/console: sessions, rooms with occupants, and the live trace (redacted, filterable by JID)."""
import base64
import http.client
import json
import queue
import threading
import time
import urllib.request

from test_hardening import create_instant_room, login

def http_port(server):
    return int(server.wait_for_log(r"http listening on \S+:(\d+)").group(1))


def sse(port, jid=""):
    """Open /console/events; return a queue of parsed events (read by a thread)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/console/events?jid=" + jid)
    r = conn.getresponse()
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    q = queue.Queue()

    def read():
        try:
            for line in r:
                if line.startswith(b"data: "):
                    q.put(json.loads(line[6:]))
        except (OSError, ValueError, http.client.HTTPException):
            pass
    threading.Thread(target=read, daemon=True).start()
    return conn, q


def drain(q, until, timeout=15):
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            e = q.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(e)
        if until(e):
            return seen
    raise AssertionError(f"not seen; got {seen[-5:]}")


def test_console_shows_sessions_rooms_and_the_live_trace(xmppd_server):
    port = http_port(xmppd_server)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/console/", timeout=10) as r:
        assert r.status == 200 and b"EventSource" in r.read()
    conn_all, everything = sse(port)
    conn_bob, bobs = sse(port, "bob@localhost")
    time.sleep(0.5)
    alice = login(xmppd_server.port, "alice", "desk")           # PLAIN: the password is traced redacted
    bob = login(xmppd_server.port, "bob", "phone")
    create_instant_room(alice, "dev@conference.localhost", "Alice")
    alice.send("<message to='bob@localhost/phone' type='chat'><body>hi bob</body></message>")
    got = drain(bobs, lambda e: e["dir"] == "OUT" and "hi bob" in e["xml"])
    assert all("bob@localhost" in (e["jid"] or "") or "bob@localhost" in e["xml"] for e in got)
    lines = drain(everything, lambda e: e["dir"] == "IN" and "hi bob" in e["xml"])
    sasl = [e for e in lines if "urn:ietf:params:xml:ns:xmpp-sasl" in e["xml"] and "<auth" in e["xml"]]
    assert sasl and all("[redacted]" in e["xml"] for e in sasl)
    token = base64.b64encode(b"\0alice\0secret").decode()        # what test_hardening.login sends
    assert not any(token in e["xml"] for e in lines)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/console/state", timeout=10) as r:
        state = json.loads(r.read())
    jids = {s["jid"]: s for s in state["sessions"]}
    assert jids["alice@localhost/desk"]["transport"] == "c2s"
    assert jids["alice@localhost/desk"]["peer"].startswith("127.0.0.1:")
    (room,) = [r for r in state["rooms"] if r["jid"] == "dev@conference.localhost"]
    assert [(o["nick"], o["jid"]) for o in room["occupants"]] == [("Alice", "alice@localhost/desk")]
    conn_all.close()
    conn_bob.close()
    for c in (alice, bob):
        c.close()
    assert "Traceback" not in xmppd_server.log()


def test_console_can_be_turned_off(xmppd_server_factory, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('web_console = "false"\n')
    server = xmppd_server_factory("--config", conf)
    port = http_port(server)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/console/", timeout=10)
        raise AssertionError("served")
    except urllib.error.HTTPError as e:
        assert e.code == 404
