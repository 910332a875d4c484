"""Start and stop the servers under test, each pinned to one CPU core.

Both servers check real stored credentials (issue 9): no ``--insecure-auth``, no plain-stored
passwords. xmppd runs as a user would start it (``python -m twisted xmppd``); its accounts
hold SCRAM keys (SHA-1 and SHA-256) at ``scram_iterations`` = 10 000. Prosody 0.12 runs from a
private directory with the configuration that ``scripts/run-prosody`` writes (loopback only,
limits disabled, STARTTLS offered but not required) and ``authentication =
"internal_hashed"`` (SCRAM-SHA-1 keys, 10 000 iterations, its default). Accounts are written
directly (xmppd's storage API; Prosody data files: ``prosodyctl register`` takes about a
second per account) with credentials derived once: every account has the same password and
salt, which costs a server nothing less per login, and lets the generator's SaltedPassword
cache (as real clients keep) hold one entry.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def wait_port(proc: subprocess.Popen, port: int, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with status {proc.returncode}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


class Server:
    """A running server process (its pid is the one to read CPU and RSS from)."""

    def __init__(self, name: str, proc: subprocess.Popen, port: int, log: Path):
        self.name, self.proc, self.port, self.log = name, proc, port, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------------------------------------
# xmppd


def xmppd_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


PREP_XMPPD = r"""
import sys
import xmppd  # compat shim first
from xmppd import config
from xmppd.storage import open_storage
from xmppd.auth.credentials import derive
from xmppd.storage import open_database
from xmppd.storage.accounts import AccountStore
data_dir, n, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = config.load(None, {"data_dir": data_dir})
db = open_database(data_dir)
accounts = AccountStore(db, cfg)
have = set(accounts.list())
creds = derive(password, cfg.scram_iterations, salt=b"xmppd-bench-salt")
made = 0
with db.transaction():
    for i in range(1, n + 1):
        if f"user{i}" not in have:
            accounts.create(f"user{i}", None, credentials=creds)
            made += 1
        else:
            accounts.set_credentials(f"user{i}", creds)
db.close()
print(f"xmppd accounts: {made} created, {len(have)} existed")
"""


def prepare_xmppd(data_dir: Path, accounts: int):
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", PREP_XMPPD, str(data_dir), str(accounts), PASSWORD],
                   cwd=REPO, env=xmppd_env(), check=True)


PREP_ARCHIVE = r"""
import sys, time
import xmppd  # compat shim first
from xmppd.services.mam import new_id
from xmppd.storage import open_database
from xmppd.storage.archive import ArchiveStore
data_dir, owner, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = open_database(data_dir)
store = ArchiveStore(db)
have = store.count(owner)
peer = "user2@" + owner.split("@", 1)[1]
now = time.time() - n * 0.01
rows = []
for i in range(have, n):
    sid = new_id()
    frm, to = (peer + "/b", owner + "/b") if i % 2 else (owner + "/b", peer + "/b")
    rows.append((owner, sid, now + i * 0.01, peer, peer + "/b",
                 f"<message from='{frm}' to='{to}' type='chat' id='m{i}'><body>archived message "
                 f"number {i}, of a typical length for a chat line</body><stanza-id "
                 f"xmlns='urn:xmpp:sid:0' by='{owner}' id='{sid}'/></message>"))
    if len(rows) == 5000:
        store.append_many(rows)
        rows = []
if rows:
    store.append_many(rows)
db.close()
print(f"xmppd archive of {owner}: {max(n - have, 0)} messages added, {have} existed")
"""


def prepare_archive(data_dir: Path, owner: str, messages: int):
    """Fill ``owner``'s message archive (XEP-0313) with ``messages`` chat messages."""
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", PREP_ARCHIVE, str(data_dir), owner, str(messages)],
                   cwd=REPO, env=xmppd_env(), check=True)


def start_xmppd(data_dir: Path, cpu: int | None, extra=()) -> Server:
    port = free_port()
    log = data_dir / "xmppd.log"
    out = open(log, "ab")
    cmd = pin(cpu) + [sys.executable, "-m", "twisted", "--log-format=text", "xmppd",
                      "--c2s-port", str(port), "--data-dir", str(data_dir),
                      "--require-encryption", "false", "--http-port", "0", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env=xmppd_env(), stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT)
    out.close()
    wait_port(proc, port, 30, "xmppd", log)
    return Server("xmppd", proc, port, log)


XMPPD_COMMAND = ("python -m twisted --log-format=text xmppd --c2s-port PORT --data-dir DIR "
                 "--require-encryption false")


# ---------------------------------------------------------------------------------------------
# Prosody


def _run_prosody_module():
    path = REPO / "scripts" / "run-prosody"
    loader = importlib.machinery.SourceFileLoader("run_prosody", str(path))
    spec = importlib.util.spec_from_loader("run_prosody", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def prosody_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prosody"], capture_output=True,
                             text=True, timeout=10).stdout
        return out.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


PROSODY_SALT = "xmppd-bench-salt"
ITERATIONS = 10_000


def prepare_prosody(base: Path, accounts: int, domain: str = "localhost"):
    """Write user1..userN as internal_hashed Prosody accounts (SCRAM-SHA-1 keys, hex, as
    mod_auth_internal_hashed stores them), one derivation for all."""
    import hashlib
    import hmac
    acc = base / "data" / re.sub(r"\W", lambda m: "%%%02x" % ord(m.group()), domain) / "accounts"
    acc.mkdir(parents=True, exist_ok=True)
    salted = hashlib.pbkdf2_hmac("sha1", PASSWORD.encode(), PROSODY_SALT.encode(), ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    stored, server = hashlib.sha1(client_key).hexdigest(), hmac.digest(salted, b"Server Key", "sha1").hex()
    body = (f'return {{\n\t["iteration_count"] = {ITERATIONS};\n\t["salt"] = "{PROSODY_SALT}";\n'
            f'\t["server_key"] = "{server}";\n\t["stored_key"] = "{stored}";\n}};\n')
    for i in range(1, accounts + 1):
        (acc / f"user{i}.dat").write_text(body)


def start_prosody(base: Path, cpu: int | None) -> Server:
    rp = _run_prosody_module()
    port = free_port()
    args = Namespace(debug=False, interface="127.0.0.1", port=port, auth="internal", tls=True,
                     domain="localhost", external_muc=None, component_port=None)
    config = rp.write_config(args, base)
    if 'authentication = "internal_hashed"' not in config.read_text():
        raise RuntimeError("scripts/run-prosody's config no longer uses internal_hashed auth")
    log = base / "prosody.log"
    out = open(base / "prosody.stdout", "ab")
    proc = subprocess.Popen(pin(cpu) + [rp.PROSODY, "-F", "--config", str(config)], cwd=base,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    wait_port(proc, port, 30, "prosody", log)
    return Server("prosody", proc, port, log)


PROSODY_COMMAND = ("prosody -F --config DIR/prosody.cfg.lua  (written by scripts/run-prosody's "
                   "write_config, authentication = \"internal_hashed\")")
