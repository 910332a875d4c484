"""Shared fixtures: a real xmppd server in a subprocess on a free loopback port.

The server is started exactly as a user would (``python -m twisted xmppd``),
so these tests exercise the twistd plugin, option parsing and the wiring,
not just the modules. ``cwd`` is the repository root and the root is put on
``PYTHONPATH``, so the checkout is tested whether or not it is pip-installed.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0
LISTENING = re.compile(r"c2s listening on (?P<iface>\S+):(?P<port>\d+)")


def server_env():
    """Environment for a child process that must import the checkout's xmppd."""
    env = dict(os.environ)
    parts = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def server_command(*args):
    """The argv that starts the server in the foreground with plain-text logs."""
    return [sys.executable, "-m", "twisted", "--log-format=text", "xmppd", "--http-port", "0",
            *map(str, args)]


class XmppdServer:
    """A running server subprocess; its combined stdout/stderr is collected by a thread."""

    host = "127.0.0.1"

    def __init__(self, args, data_dir, domain="localhost", muc_domain=None, command=None):
        """``command`` replaces ``python -m twisted ... xmppd`` (e.g. scripts/dev-server)."""
        self.args = list(args)
        self.data_dir = Path(data_dir)
        self.domain = domain
        self.muc_domain = muc_domain or "conference." + domain
        self.port = None
        self.interface = None
        self._lines = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._eof = threading.Event()
        self.proc = subprocess.Popen(
            [*map(str, command), *map(str, self.args)] if command else server_command(*self.args),
            cwd=REPO_ROOT, env=server_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for line in self.proc.stdout:
                with self._lock:
                    self._lines.append(line)
                if not self._listening.is_set():
                    m = LISTENING.search(line)
                    if m:
                        self.interface, self.port = m["iface"], int(m["port"])
                        self._listening.set()
        finally:
            self._eof.set()

    def log(self):
        """Everything the server printed so far (stdout and stderr)."""
        with self._lock:
            return "".join(self._lines)

    def wait_listening(self, timeout=START_TIMEOUT):
        """Block until the c2s listener is up; fail the test with the log otherwise."""
        deadline = time.monotonic() + timeout
        while not self._listening.is_set():
            if self._eof.is_set() or self.proc.poll() is not None:
                self._eof.wait(2)
                pytest.fail(f"xmppd exited (code {self.proc.poll()}) before listening; "
                            f"argv={self.args}\n--- server log ---\n{self.log()}", pytrace=False)
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"xmppd did not log 'c2s listening on' within {timeout}s; "
                            f"argv={self.args}\n--- server log ---\n{self.log()}", pytrace=False)
            self._listening.wait(0.05)
        return self

    def wait_for_log(self, pattern, timeout=10.0):
        """Wait until a log line matches ``pattern`` (regex); return the match or fail."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() > deadline or self._eof.is_set():
                pytest.fail(f"no log line matching {pattern!r}\n--- server log ---\n{self.log()}",
                            pytrace=False)
            time.sleep(0.05)

    @property
    def returncode(self):
        return self.proc.poll()

    def stop(self, timeout=10.0):
        """SIGTERM (clean shutdown), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._eof.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __repr__(self):
        return f"<XmppdServer {self.domain} {self.host}:{self.port} pid={self.proc.pid}>"


@pytest.fixture
def xmppd_server_factory(tmp_path):
    """Start servers with extra arguments; every one is stopped at teardown.

    ``factory(*extra_args, domain="localhost", insecure_auth=True,
    data_dir=None, wait=True)``: the defaults give a dev server on a free
    port with its own data dir under ``tmp_path``. Pass ``domain`` when the
    domain comes from a ``--config`` file so the returned object knows it.
    With ``wait=False`` the caller calls ``wait_listening()`` itself.
    """
    started = []
    counter = iter(range(1_000_000))

    def factory(*extra_args, domain=None, muc_domain=None, insecure_auth=True,
                data_dir=None, wait=True):
        n = next(counter)
        if data_dir is None:
            data_dir = tmp_path / ("data" if n == 0 else f"data{n}")
        args = ["--c2s-port", "0", "--data-dir", str(data_dir)]
        if insecure_auth:
            args.append("--insecure-auth")
        if domain is not None:
            args += ["--domain", domain]
        args += list(extra_args)
        server = XmppdServer(args, data_dir, domain=domain or "localhost", muc_domain=muc_domain)
        started.append(server)
        if wait:
            server.wait_listening()
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def xmppd_server(xmppd_server_factory):
    """A dev-mode server (``--insecure-auth``) for ``localhost`` on a free port."""
    return xmppd_server_factory()
