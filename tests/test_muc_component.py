"""xmppd-muc: the MUC as an XEP-0114 component process, behind xmppd and behind Prosody.

Every MUC scenario (ours in tests/scenarios/muc_*.scs and Prosody's in
../shared/scansion) runs through the host server's c2s with a fresh
``twistd xmppd-muc`` attached as ``conference.localhost``:

* behind xmppd (``[[components]]`` for the MUC domain replaces the built-in MUC);
* behind a private Prosody 0.12 (``Component "conference.localhost"`` with a
  secret, scripts/run-prosody --external-muc). Scripts that cannot pass there
  are listed in PROSODY_GAPS with the reason (strict xfail: a pass fails the run).
"""
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, XmppdServer
from test_c2s_raw import C, Raw, start_server
from tools import require_command
from xmppd.testing.runner import run_file

SECRET = "muc-component-secret"
MUC_DOMAIN = "conference.localhost"
OWN = sorted((REPO_ROOT / "tests" / "scenarios").glob("muc_*.scs"))
SHARED_DIR = REPO_ROOT.parent / "shared" / "scansion"
SHARED = sorted(SHARED_DIR.glob("*.scs")) if SHARED_DIR.is_dir() else []
RUN_PROSODY = REPO_ROOT / "scripts" / "run-prosody"

# Scripts that cannot pass behind Prosody, and why (the MUC itself behaves the same).
PROSODY_GAPS = {
}


def muc_command():
    return [sys.executable, "-m", "twisted", "--log-format=text", "xmppd-muc"]


def start_muc(port, data_dir, *extra, secret=SECRET, wait=True):
    """A ``twistd xmppd-muc`` attached to the component port ``port``."""
    args = ["--server", f"127.0.0.1:{port}", "--domain", MUC_DOMAIN, "--secret", secret,
            "--data-dir", str(data_dir), *extra]
    muc = XmppdServer(args, data_dir, command=muc_command())
    if wait:
        muc.wait_for_log(r"xmppd-muc: connected as conference\.localhost", timeout=20)
    return muc


def wait_port(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on {port}")


# -- behind xmppd ------------------------------------------------------------------

HOST_CONFIG = f"""
component_port = 0
[[components]]
domain = "{MUC_DOMAIN}"
secret = "{SECRET}"
"""


@pytest.fixture(scope="module")
def xmppd_host(tmp_path_factory):
    s = start_server(tmp_path_factory, "--insecure-auth", config=HOST_CONFIG)
    s.component_port = int(s.wait_for_log(r"component listening on \S+:(\d+)")[1])
    yield s
    s.stop()


@pytest.fixture
def muc_for(tmp_path):
    started = []

    def start(port, *extra, **kw):
        m = start_muc(port, tmp_path / f"muc{len(started)}", *extra, **kw)
        started.append(m)
        return m
    yield start
    for m in started:
        m.stop()


def _wait_component(host, count):
    """The host logged ``count`` connections of the MUC component (the last one is live)."""
    deadline = time.monotonic() + 10
    while len(re.findall(r"component conference\.localhost connected", host.log())) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"component not connected\n{host.log()[-3000:]}")
        time.sleep(0.05)


_attached = [0]


@pytest.mark.parametrize("path", [pytest.param(p, id=f"own/{p.name}") for p in OWN]
                         + [pytest.param(p, id=f"shared/{p.name}") for p in SHARED])
def test_scenario_behind_xmppd(xmppd_host, muc_for, path):
    muc = muc_for(xmppd_host.component_port)
    _attached[0] += 1
    _wait_component(xmppd_host, _attached[0])
    result = run_file(path, host=xmppd_host.host, port=xmppd_host.port, timeout=5)
    assert result.ok, (f"{result.failure.report()}\n--- xmppd-muc log ---\n{muc.log()[-3000:]}"
                       f"\n--- host log ---\n{xmppd_host.log()[-2000:]}")
    muc.stop()
    _wait_detached(xmppd_host, _attached[0])


def _wait_detached(host, count):
    """The host logged ``count`` departures: the next xmppd-muc will not meet a conflict."""
    deadline = time.monotonic() + 10
    while len(re.findall(r"component conference\.localhost disconnected", host.log())) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"component not detached\n{host.log()[-3000:]}")
        time.sleep(0.05)


def test_own_muc_scenarios_exist():
    assert len(OWN) >= 10


def test_room_works_and_host_lists_it_while_connected(xmppd_host, muc_for):
    c = Raw(xmppd_host.port)
    c.login("lister")
    disco = "http://jabber.org/protocol/disco#items"
    muc = muc_for(xmppd_host.component_port)
    _attached[0] += 1
    _wait_component(xmppd_host, _attached[0])
    muc.wait_for_log(r"localhost offers multicast \(XEP-0033\)")    # broadcasts as one stanza
    c.send(f"<iq type='get' to='localhost' id='i1'><query xmlns='{disco}'/></iq>")
    assert MUC_DOMAIN in {i.get("jid") for i in c.next().iter(f"{{{disco}}}item")}
    c.send(f"<presence to='r1@{MUC_DOMAIN}/Me'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    el = c.next()
    assert el.tag == f"{C}presence" and el.get("from") == f"r1@{MUC_DOMAIN}/Me"
    muc.stop()
    _wait_detached(xmppd_host, _attached[0])
    c.send(f"<iq type='get' to='localhost' id='i2'><query xmlns='{disco}'/></iq>")
    el = c.next()
    while el.get("id") != "i2":
        el = c.next()
    assert MUC_DOMAIN not in {i.get("jid") for i in el.iter(f"{{{disco}}}item")}
    c.send(f"<message to='r1@{MUC_DOMAIN}' type='groupchat' id='g'><body>x</body></message>")
    el = c.next()
    assert el.get("type") == "error" and el.find(f"{C}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}"
                                                 "service-unavailable") is not None
    c.close()


def test_wrong_secret_ends_xmppd_muc_with_a_clear_line(xmppd_host, tmp_path):
    muc = start_muc(xmppd_host.component_port, tmp_path / "m", secret="Zq9-not-it", wait=False)
    try:
        assert muc.proc.wait(20) == 78
        assert "refused the component conference.localhost: not-authorized" in muc.log()
        assert "Zq9" not in muc.log() and "Zq9" not in xmppd_host.log()
    finally:
        muc.stop()


def test_xmppd_muc_flags_are_checked(tmp_path):
    r = subprocess.run([*muc_command(), "--domain", MUC_DOMAIN, "--secret", "x"],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
                       env={**__import__("conftest").server_env()})
    assert r.returncode == 64 and "--server" in r.stderr
    r = subprocess.run([*muc_command(), "--server", "nope", "--domain", MUC_DOMAIN, "--secret", "x"],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
                       env={**__import__("conftest").server_env()})
    assert r.returncode == 64 and "HOST:PORT" in r.stderr


# -- behind Prosody ---------------------------------------------------------------------

class Prosody:
    def __init__(self, state):
        require_command("prosody", "install Prosody (`apt-get install prosody`)")
        self.proc = subprocess.Popen(
            [sys.executable, str(RUN_PROSODY), "--port", "0", "--dir", str(state),
             "--external-muc", SECRET],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("prosody listening on "):
            self.stop()
            pytest.fail(f"run-prosody did not start: {line}{self.proc.stdout.read()}")
        self.port = int(line.rsplit(":", 1)[1])
        line = self.proc.stdout.readline()
        assert line.startswith("component port "), line
        self.component_port = int(line.split()[-1])
        wait_port(self.component_port)
        self.state = Path(state)

    def log(self):
        try:
            return (self.state / "prosody.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def prosody(tmp_path_factory):
    p = Prosody(tmp_path_factory.mktemp("prosody"))
    yield p
    p.stop()


def _prosody_params():
    out = []
    for p in OWN + SHARED:
        gap = PROSODY_GAPS.get(p.name)
        marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
        out.append(pytest.param(p, id=("own/" if p in OWN else "shared/") + p.name, marks=marks))
    return out


@pytest.mark.parametrize("path", _prosody_params())
def test_scenario_behind_prosody(prosody, muc_for, path):
    muc = muc_for(prosody.component_port)
    assert "offers multicast" not in muc.log()       # Prosody: one stanza per recipient
    result = run_file(path, host="127.0.0.1", port=prosody.port, timeout=5)
    assert result.ok, (f"{result.failure.report()}\n--- xmppd-muc log ---\n{muc.log()[-3000:]}"
                       f"\n--- prosody log ---\n{prosody.log()[-2000:]}")
    muc.stop()
    time.sleep(0.3)      # Prosody notices the component is gone before the next one connects
