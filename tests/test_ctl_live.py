"""xmppdctl against the live server through the admin socket: status, sessions, kick, announce,
reload, reset (refused without --insecure-auth/allow_reset), and clear messages when no
server runs. Clients are slixmpp and raw sockets."""
import asyncio
import json
import os
import socket
import stat
import subprocess
import sys

from conftest import REPO_ROOT, server_env
from test_admin_commands import adduser, login
from test_c2s_raw import Raw


def ctl(data_dir, *args, config=None):
    argv = [sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data_dir)]
    if config:
        argv += ["--config", str(config)]
    return subprocess.run(argv + list(args), capture_output=True, text=True, cwd=REPO_ROOT,
                          env=server_env(), timeout=60)


def test_status_sessions_kick_announce(xmppd_server_factory, tmp_path):
    server = xmppd_server_factory()
    sock = server.data_dir / "xmppd.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

    async def scenario():
        alice = await login(server, "alice@localhost/one", "x")
        alice2 = await login(server, "alice@localhost/two", "x")
        bob = await login(server, "bob@localhost/b", "x")
        await bob.plugin["xep_0030"].get_info(jid="localhost", timeout=10)   # bob is bound

        r = ctl(server.data_dir, "status")
        assert r.returncode == 0, r.stderr
        assert "sessions: 3 (2 users online)" in r.stdout
        assert "serving localhost" in r.stdout and "MiB resident" in r.stdout

        r = ctl(server.data_dir, "sessions")
        jids = [line.split("\t")[0] for line in r.stdout.splitlines()]
        assert jids == ["alice@localhost/one", "alice@localhost/two", "bob@localhost/b"]
        assert "127.0.0.1" in r.stdout

        got = asyncio.get_running_loop().create_future()
        bob.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        r = ctl(server.data_dir, "announce", "Restart at noon")
        assert r.returncode == 0 and "sent to 3 session(s)" in r.stdout, r.stderr
        m = await asyncio.wait_for(got, 10)
        assert m["body"] == "Restart at noon" and m["type"] == "headline"

        gone = asyncio.get_running_loop().create_future()
        alice2.add_event_handler("disconnected", lambda *_: gone.done() or gone.set_result(1))
        r = ctl(server.data_dir, "kick", "alice@localhost/two")
        assert "ended 1 session(s)" in r.stdout
        await asyncio.wait_for(gone, 10)
        r = ctl(server.data_dir, "kick", "alice@localhost")
        assert "ended 1 session(s)" in r.stdout
        r = ctl(server.data_dir, "kick", "someone@elsewhere.example")
        assert r.returncode == 1 and "not an account of localhost" in r.stderr
        r = ctl(server.data_dir, "announce", "  ")
        assert r.returncode == 1 and "empty" in r.stderr
        r = ctl(server.data_dir, "reload")
        assert r.returncode == 0 and "reloaded" in r.stdout, r.stderr
        bob.disconnect()

    asyncio.run(scenario())

    # hostile input on the socket itself: garbage, a non-object, an unknown command, a huge line
    for data, expect in ((b"not json\n", "malformed"), (b"[1]\n", "malformed"),
                         (b'{"cmd": "format-disk"}\n', "unknown command"),
                         (b'{"cmd": "deluser"}\n', "name the account"),
                         (b'{"cmd": "deluser", "arg": 7}\n', "name the account"),
                         (b'{"cmd": "deluser", "arg": "x@elsewhere.example"}\n', "not an account"),
                         (b'{"cmd": "deluser", "arg": "bob@localhost/res"}\n', "bare JID"),
                         (b'{"cmd": "x", "arg": "' + b"a" * 100_000 + b'"}\n', "too long")):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(data)
        reply = json.loads(s.makefile().readline())
        assert reply["ok"] is False and expect in reply["error"], reply
        s.close()
    assert server.returncode is None

    server.stop()
    r = ctl(server.data_dir, "status")
    assert r.returncode == 1 and "no running server" in r.stderr


def test_reset_is_refused_without_allow_reset(xmppd_server_factory, tmp_path):
    data = tmp_path / "real"
    adduser(data, "alice", "pw")
    server = xmppd_server_factory(insecure_auth=False, data_dir=data)
    r = ctl(data, "reset")
    assert r.returncode == 1 and "reset refused" in r.stderr
    assert "alice@localhost" in ctl(data, "list").stdout


def test_reset_gives_a_clean_server(xmppd_server_factory, tmp_path):
    server = xmppd_server_factory()
    c = Raw(server.port)
    c.login("olduser")
    c.send("<presence to='keep@conference.localhost/me'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    c.next()
    r = ctl(server.data_dir, "reset")
    assert r.returncode == 0, r.stderr
    assert "ended 1 session(s), destroyed 1 room(s)" in r.stdout
    c.wait_closed()
    assert ctl(server.data_dir, "list").stdout == ""
    c.close()
    for _ in range(50):          # the server sees the closed connection soon after
        r = ctl(server.data_dir, "status")
        if "sessions: 0" in r.stdout:
            break
    assert "sessions: 0" in r.stdout and "rooms: 0" in r.stdout
    # and the server goes on serving
    Raw(server.port).login("newuser")


PHOTO = ("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
         "<BINVAL>iVBORw0KGgo=</BINVAL></PHOTO></vCard></iq>")
BLOCK = ("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>"
         "<item jid='spam@example.org'/></block></iq>")
BLOCKLIST = "<iq type='get' id='b2'><blocklist xmlns='urn:xmpp:blocking'/></iq>"
NS_UPDATE = "{vcard-temp:x:update}"


def _photo_seen_by(bob, alice):
    """alice sends bob directed presence; the hash the server stamped on it (XEP-0153)."""
    alice.send("<presence to='bob@localhost'/>")
    while True:
        el = bob.next()
        if el.tag.endswith("presence") and el.get("from", "").startswith("alice@") \
                and el.get("type") is None:
            return el.find(f"{NS_UPDATE}x/{NS_UPDATE}photo").text or ""


def _result(c, iq_id):
    while True:
        el = c.next()
        if el.get("id") == iq_id:
            assert el.get("type") == "result", el.attrib
            return el


def test_deluser_on_a_live_server_ends_sessions_and_leaves_nothing_behind(
        xmppd_server_factory, tmp_path):
    """Deleted through the admin socket: the sessions end, and an account made again under the
    same name starts clean, also in what the server keeps in memory (blocklist, avatar hash)."""
    data = tmp_path / "data"
    adduser(data, "alice", "pw-one")
    adduser(data, "bob", "pw-bob")
    server = xmppd_server_factory(insecure_auth=False, data_dir=data)
    bob = Raw(server.port)
    bob.login("bob", "pw-bob")
    bob.send("<presence/>")
    alice = Raw(server.port)
    alice.login("alice", "pw-one")
    alice.send(PHOTO)
    _result(alice, "v1")
    alice.send(BLOCK)
    _result(alice, "b1")
    assert _photo_seen_by(bob, alice) != ""

    r = ctl(data, "deluser", "alice")
    assert r.returncode == 0, r.stderr
    assert "deleted alice@localhost (1 session(s) ended)" in r.stdout
    assert alice.stream_error() == "not-authorized"
    assert "alice@localhost" not in ctl(data, "list").stdout

    adduser(data, "alice", "pw-two")
    alice = Raw(server.port)
    alice.login("alice", "pw-two")
    alice.send(BLOCKLIST)
    assert list(_result(alice, "b2").find("{urn:xmpp:blocking}blocklist")) == []
    assert _photo_seen_by(bob, alice) == ""
    r = ctl(data, "deluser", "nobody")
    assert r.returncode == 1 and "no account" in r.stderr, (r.stdout, r.stderr)
