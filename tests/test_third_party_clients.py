"""Gajim, poezio and profanity log in to a --trace server, headless, as a new user would.

Issue 11's "done when": none of them may get ``service-unavailable`` (or
``feature-not-implemented``) for vCard, PEP, private storage or bookmarks.
Each client runs with an isolated HOME and its own config (an account for
alice with the server's certificate trusted), Gajim under ``xvfb-run`` and the
terminal clients on a pseudo-terminal. Before it starts, alice has a vCard
with a photo (so her presence carries an avatar hash) and an autojoin
bookmark for a room where bob, who has an avatar too, is waiting. The test
reads the server's trace until the requests the client is known to make at
login (listed per client below) have been seen and answered, stops the
client, and checks every answer in those namespaces. The lists make the test
fail when a client stops asking, not only when the server answers wrongly.

Gajim and poezio refuse to run as root: as root, the clients run as
``nobody`` (setpriv) in a directory of their own under /tmp.
"""
import base64
import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import tempfile
import termios
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from personal_helpers import iq, ok
from test_c2s_raw import Raw
from tools import require_command
from xmppd.transports.tls import DEV_CERT

PASSWORD = "secret"
ROOM = "lounge@conference.localhost"
LOGIN_TIMEOUT = 60          # seconds for a client to make all its expected requests
SETTLE = 1.5                # then this long for anything that follows closely

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
WATCHED = {"vcard-temp", NS_PUBSUB, NS_PUBSUB + "#owner", "jabber:iq:private"}
BAD = {"service-unavailable", "feature-not-implemented"}
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TRACE = re.compile(r"c2s (?P<cid>\S+) (?P<jid>\S+@\S+) (?P<dir>IN|OUT) (?P<xml><.*)$")


# -- the server's trace --------------------------------------------------------------

def _unescape(text):
    """Undo wire.redact.one_line (backslash, CR and LF escaped)."""
    return re.sub(r"\\([\\rn])", lambda m: {"\\": "\\", "r": "\r", "n": "\n"}[m[1]], text)


def _local(tag):
    return tag.rsplit("}", 1)[-1]


def _ns(tag):
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


class Stanza:
    def __init__(self, cid, jid, direction, el):
        self.cid, self.jid, self.dir, self.el = cid, jid, direction, el
        self.name = _local(el.tag)
        self.type = el.get("type")
        self.id = el.get("id")
        children = [c for c in el if _local(c.tag) != "error"]
        self.payload = children[0] if children else None
        self.ns = _ns(self.payload.tag) if self.payload is not None else ""

    def error_condition(self):
        err = next((c for c in self.el if _local(c.tag) == "error"), None)
        if err is None:
            return None
        return next((_local(c.tag) for c in err if _ns(c.tag) == STANZAS and _local(c.tag) != "text"), "?")

    def node(self):
        """The node of the first pubsub child (publish/items/...), if any."""
        if self.ns not in (NS_PUBSUB, NS_PUBSUB + "#owner"):
            return None
        op = next(iter(self.payload), None)
        return op.get("node") if op is not None else None

    def op(self):
        op = next(iter(self.payload), None) if self.payload is not None else None
        return _local(op.tag) if op is not None else None

    def has(self, local_name):
        return any(_local(e.tag) == local_name for e in self.el.iter())

    def summary(self):
        """One line: type, namespace (pubsub: operation and node, private: the stored namespace), to."""
        what = self.ns
        if self.node() is not None:
            what += f" {self.op()} {self.node()}" + (" +publish-options" if self.has("publish-options") else "")
        elif self.ns == "jabber:iq:private" and len(self.payload):
            what += " " + _ns(self.payload[0].tag)
        to = self.el.get("to")
        return f"{self.type} {what}" + (f" to={to}" if to else "")

    def short(self):
        return ET.tostring(self.el, encoding="unicode")[:300]


def session_stanzas(log, resource_prefix):
    """Stanzas in and out of the bound sessions whose resource starts with ``resource_prefix``."""
    out = []
    for line in log.splitlines():
        m = TRACE.search(line)
        if not m or not m["jid"].split("/", 1)[-1].startswith(resource_prefix):
            continue
        try:
            el = ET.fromstring(_unescape(m["xml"]))
        except ET.ParseError:
            continue        # stream-level writes (e.g. </stream:stream>)
        out.append(Stanza(m["cid"], m["jid"], m["dir"], el))
    return out


def watched_requests(stanzas):
    """[(request, answer or None)] for the client's IQ get/set in the watched namespaces."""
    answers = {}
    for s in stanzas:
        if s.dir == "OUT" and s.name == "iq" and s.type in ("result", "error"):
            answers.setdefault((s.cid, s.id), s)
    return [(s, answers.get((s.cid, s.id))) for s in stanzas
            if s.dir == "IN" and s.name == "iq" and s.type in ("get", "set") and s.ns in WATCHED]


# -- what each client is known to ask at login ---------------------------------------

def vcard_get(s):
    return s.dir == "IN" and s.ns == "vcard-temp" and s.type == "get"


def private_get(what):
    return lambda s: (s.dir == "IN" and s.ns == "jabber:iq:private" and s.type == "get"
                      and any(_ns(c.tag) == what for c in s.payload))


def pep(op, node, options=False):
    return lambda s: (s.dir == "IN" and s.node() is not None and s.op() == op
                      and s.node().startswith(node) and (not options or s.has("publish-options")))


class accepted:
    """An expected request that must also have been answered with a result at least once."""

    def __init__(self, pred):
        self.pred = pred

    def __call__(self, s):
        return self.pred(s)


def room_join(s):
    return s.dir == "IN" and s.name == "presence" and (s.el.get("to") or "").startswith(ROOM + "/")


EXPECTED = {
    # Gajim 1.7.3 (nbxmpp 4): XEP-0402 bookmarks (it needs pubsub#config-node-max for that),
    # its OMEMO device list published with publish-options, its own avatar over PEP, the
    # room occupants' vCard avatars, private storage for its roster delimiter and notes.
    "gajim": {
        "private storage get (roster:delimiter)": private_get("roster:delimiter"),
        "XEP-0402 bookmarks items get": pep("items", "urn:xmpp:bookmarks:1"),
        "OMEMO device list items get": pep("items", "eu.siacs.conversations.axolotl.devicelist"),
        "OMEMO bundle publish with publish-options":
            accepted(pep("publish", "eu.siacs.conversations.axolotl.bundles:", True)),
        "OMEMO device list publish with publish-options":
            accepted(pep("publish", "eu.siacs.conversations.axolotl.devicelist", True)),
        "own avatar data items get (XEP-0084)": pep("items", "urn:xmpp:avatar:data"),
        "room joined from the bookmark": room_join,
        "vCard get of a room occupant (XEP-0153)": lambda s: vcard_get(s) and s.el.get("to", "").startswith(ROOM + "/"),
    },
    # poezio 0.14 (slixmpp 1.8): its own vCard, its nickname over PEP (XEP-0172), XEP-0048
    # bookmarks in private storage. (It often, not always, fetches its own avatar over PEP
    # too: that depends on the order in which its login answers arrive.)
    "poezio": {
        "own vCard get": vcard_get,
        "nickname publish (XEP-0172)": pep("publish", "http://jabber.org/protocol/nick"),
        "private storage bookmarks get": private_get("storage:bookmarks"),
        "room joined from the bookmark": room_join,
    },
    # profanity 0.13.1 (libstrophe): XEP-0048 bookmarks in private storage at login; its
    # start script (profanity's own scripting) sets an avatar, as a user would. (Not
    # "/omemo gen": the script runs before profanity has read the server's features, so its
    # first bundle publish has no publish-options and the node gets the default access
    # model; profanity's fix-up, a node_config submit, keeps that model and it loops. See
    # docs/CLIENTS.md.)
    "profanity": {
        "private storage bookmarks get": private_get("storage:bookmarks"),
        "avatar data publish": accepted(pep("publish", "urn:xmpp:avatar:data")),
        "avatar metadata publish": accepted(pep("publish", "urn:xmpp:avatar:metadata")),
        "room joined from the bookmark": room_join,
    },
}


# -- the account's data before the client comes ------------------------------------

def png(rgb, size=8):
    """A tiny valid PNG (the clients decode avatars)."""
    raw = b"".join(b"\0" + bytes(rgb) * size for _ in range(size))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def set_vcard(c, nick, rgb):
    photo = base64.b64encode(png(rgb)).decode()
    ok(iq(c, f"<vCard xmlns='vcard-temp'><NICKNAME>{nick}</NICKNAME><PHOTO><TYPE>image/png</TYPE>"
             f"<BINVAL>{photo}</BINVAL></PHOTO></vCard>"))


def seed(server):
    """alice: vCard with photo, an autojoin bookmark; bob: vCard with photo, waiting in the room.
    Returns bob's connection (keep it open while the client runs)."""
    alice = Raw(server.port)
    alice.login("alice", PASSWORD, resource="seed")
    set_vcard(alice, "Alice", (200, 30, 30))
    ok(iq(alice, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
                 f"<conference jid='{ROOM}' autojoin='true' name='Lounge'><nick>alice</nick></conference>"
                 "</storage></query>"))
    alice.close()
    bob = Raw(server.port)
    bob.login("bob", PASSWORD, resource="seed")
    set_vcard(bob, "Bob", (30, 30, 200))
    bob.send("<presence/>")
    bob.send(f"<presence to='{ROOM}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    ok(iq(bob, "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/>"
               "</query>", to=ROOM))                      # an instant room (XEP-0045 §10.1.2)
    return bob


@pytest.fixture
def server(xmppd_server_factory):
    srv = xmppd_server_factory("--trace", "--user", f"alice:{PASSWORD}", "--user", f"bob:{PASSWORD}",
                               insecure_auth=False)
    bob = seed(srv)
    yield srv
    bob.close()


# -- running a client --------------------------------------------------------------

@pytest.fixture
def home():
    """A client HOME that the client's user can use (nobody when we are root)."""
    path = Path(tempfile.mkdtemp(prefix="xmppd-client-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _drop_root(home):
    """argv prefix that runs the client as nobody when we are root (Gajim and poezio refuse root)."""
    if os.geteuid() != 0:
        return []
    nobody = pwd.getpwnam("nobody")
    for root, dirs, files in os.walk(home):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), nobody.pw_uid, nobody.pw_gid)
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    setpriv = require_command("setpriv", "install util-linux")
    return [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


def _env(home, **extra):
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
            "XDG_CACHE_HOME": str(home / "cache"), **extra}


class Client:
    """A client process in its own process group; its terminal or stdout is drained to a file."""

    def __init__(self, argv, home, tty):
        self.output = home / "client-output.txt"
        self._out = open(self.output, "wb")
        if tty:
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            self.proc = subprocess.Popen(argv, cwd=home, env=_env(home, TERM="xterm"), stdin=slave,
                                         stdout=slave, stderr=slave, start_new_session=True)
            os.close(slave)
            self._reader = threading.Thread(target=self._drain, args=(master,), daemon=True)
            self._reader.start()
        else:
            self.proc = subprocess.Popen(argv, cwd=home, env=_env(home), stdin=subprocess.DEVNULL,
                                         stdout=self._out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            self._reader = None

    def _drain(self, fd):
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                self._out.write(data)
        except OSError:
            pass            # EIO: the terminal's last process is gone
        finally:
            os.close(fd)

    def stop(self):
        """SIGTERM to the whole group (xvfb-run's Xvfb too), SIGKILL if it lingers."""
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                # the group may outlive its leader (Xvfb): make sure it is gone too
                os.killpg(self.proc.pid, 0)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        if self._reader is not None:
            self._reader.join(5)
        self._out.close()

    def tail(self, n=3000):
        return self.output.read_bytes()[-n:].decode("utf-8", "replace")


def run_and_check(server, name, client):
    """Wait until the client made its expected requests and got its answers; stop it; check."""
    expected = EXPECTED[name]
    deadline = time.monotonic() + LOGIN_TIMEOUT
    settled_at = None
    stanzas = []
    try:
        while True:
            stanzas = session_stanzas(server.log(), name)
            missing = [what for what, pred in expected.items() if not any(pred(s) for s in stanzas)]
            unanswered = [req for req, answer in watched_requests(stanzas) if answer is None]
            if not missing and not unanswered:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= SETTLE:
                    break
            else:
                settled_at = None
            if time.monotonic() > deadline or client.proc.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        client.stop()
    # requests made while we were stopping it may go unanswered: only earlier ones must not
    seen_before_stop = {(s.cid, s.id) for s in stanzas}
    stanzas = session_stanzas(server.log(), name)
    pairs = watched_requests(stanzas)
    report = "\n".join(f"  {req.short()}\n    -> {answer.short() if answer is not None else 'NO ANSWER'}"
                       for req, answer in pairs)
    context = (f"\n--- {name}'s requests in vCard/PEP/private storage and the answers ---\n{report}"
               f"\n--- end of {name}'s output ---\n{client.tail()}")
    print(f"{name}: " + "; ".join(
        f"{req.summary()} -> " + ("NO ANSWER" if answer is None else answer.type + (
            f" {answer.error_condition()}" if answer.type == "error" else "")) for req, answer in pairs))
    assert not missing, f"{name} did not make these requests within {LOGIN_TIMEOUT}s: {missing}{context}"
    bad = [(req, answer) for req, answer in pairs
           if answer is not None and answer.type == "error" and answer.error_condition() in BAD]
    # an error sent to the client that answers nothing it asked (or in a stanza of its own)
    stray = [s for s in stanzas if s.dir == "OUT" and s.type == "error" and s.ns in WATCHED
             and s.error_condition() in BAD and all(s is not a for _, a in pairs)]
    assert not bad and not stray, (
        f"{name} got " + "; ".join(f"{req.summary()} -> {answer.error_condition()}" for req, answer in bad)
        + "".join(f"; {s.short()}" for s in stray) + context)
    assert all(answer is not None for req, answer in pairs if (req.cid, req.id) in seen_before_stop), \
        f"{name} has unanswered requests:{context}"
    refused = [what for what, pred in expected.items() if isinstance(pred, accepted) and not any(
        pred(req) and answer is not None and answer.type == "result" for req, answer in pairs)]
    assert not refused, f"{name}: never accepted: {refused}{context}"
    # a client that retries what keeps failing (profanity's bundle loop) does not settle
    failures = {}
    for req, answer in pairs:
        if answer is not None and answer.type == "error":
            failures[req.summary()] = failures.get(req.summary(), 0) + 1
    loops = {what: n for what, n in failures.items() if n > 2}
    assert not loops, f"{name} repeated failing requests: {loops}{context}"
    return pairs


# -- the clients --------------------------------------------------------------------

def gajim_home(home, port, cert):
    """Gajim 1.7's settings database with one active account and the server's certificate
    in its trust store (cert_store: a certificate there that the TLS handshake calls
    'unknown CA' is accepted without asking)."""
    config, data = home / "config" / "gajim", home / "data" / "gajim"
    for d in (config, data / "cert_store", home / "cache" / "gajim"):
        d.mkdir(parents=True)
    shutil.copy(cert, data / "cert_store" / "xmppd-dev-cert.pem")
    con = sqlite3.connect(config / "settings.sqlite")
    con.executescript("CREATE TABLE settings (name TEXT UNIQUE, settings TEXT);"
                      "CREATE TABLE account_settings (account TEXT UNIQUE, settings TEXT);")
    app = {"use_keyring": False, "check_for_update": False}
    for name, value in (("app", app), ("soundevents", {}), ("status_presets", {}), ("proxies", {}),
                        ("plugins", {})):
        con.execute("INSERT INTO settings VALUES (?, ?)", (name, json.dumps(value)))
    account = {"active": True, "name": "alice", "hostname": "localhost", "password": PASSWORD,
               "resource": "gajim", "use_custom_host": True, "custom_host": "127.0.0.1",
               "custom_port": port, "custom_type": "START TLS", "autoconnect": True}
    con.execute("INSERT INTO account_settings VALUES (?, ?)",
                ("alice", json.dumps({"account": account, "contact": {}, "group_chat": {}})))
    con.execute("PRAGMA user_version=0")     # Gajim migrates it (adds its workspace)
    con.commit()
    con.close()


def test_gajim(server, home):
    gajim = require_command("gajim", "`apt-get install gajim`")
    xvfb_run = require_command("xvfb-run", "`apt-get install xvfb xauth`")
    gajim_home(home, server.port, server.data_dir / DEV_CERT)
    client = Client([*_drop_root(home), xvfb_run, "-a", gajim, "-v"], home, tty=False)
    run_and_check(server, "gajim", client)


def test_poezio(server, home):
    poezio = require_command("poezio", "`apt-get install poezio`")
    (home / "config" / "poezio").mkdir(parents=True)
    shutil.copy(server.data_dir / DEV_CERT, home / "server-cert.pem")
    (home / "config" / "poezio" / "poezio.cfg").write_text(
        "[Poezio]\n"
        "jid = alice@localhost/poezio\n"
        f"password = {PASSWORD}\n"
        "custom_host = 127.0.0.1\n"
        f"custom_port = {server.port}\n"
        f"ca_cert_path = {home / 'server-cert.pem'}\n")
    client = Client([*_drop_root(home), poezio], home, tty=True)
    run_and_check(server, "poezio", client)


def test_profanity(server, home):
    profanity = require_command("profanity", "`apt-get install profanity`")
    data = home / "data" / "profanity"
    (data / "scripts").mkdir(parents=True)
    (home / "avatar.png").write_bytes(png((30, 200, 30)))
    # tls.policy=trust: TLS required, the self-signed certificate accepted (libstrophe's
    # XMPP_CONN_FLAG_TRUST_TLS); script.start runs after login.
    (data / "accounts").write_text(
        "[alice]\nenabled=true\njid=alice@localhost\nserver=127.0.0.1\n"
        f"port={server.port}\nresource=profanity\npassword={PASSWORD}\ntls.policy=trust\n"
        "presence.login=online\nscript.start=login\n")
    (data / "scripts" / "login").write_text(f"/avatar set {home / 'avatar.png'}\n")
    client = Client([*_drop_root(home), profanity, "-a", "alice"], home, tty=True)
    run_and_check(server, "profanity", client)
