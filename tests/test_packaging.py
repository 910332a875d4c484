"""`pip install .` and `pip install -e . --config-settings editable_mode=compat`
both make `twistd xmppd` work from any directory.

Why this needs a test: the repository has a flat layout and ships
``twisted/plugins/xmppd_plugin.py`` without ``__init__.py`` files. A plain
PEP 660 editable install hides the plugin from twistd, and an accidental
``twisted/__init__.py`` in the wheel would overwrite Twisted itself.

Each case installs a copy of the checkout (so build artifacts never land in
the working tree) into a fresh, pip-less virtualenv. That venv sees the
current interpreter's site-packages through a ``.pth`` file, so the
dependencies resolve without downloading anything and ``--no-deps`` suffices.
When the current environment has a build backend able to make wheels
(setuptools >= 70.1 or the ``wheel`` package, as in the test extras), the
build runs offline with ``--no-build-isolation``; otherwise pip fetches the
backend from the package index as it would for a user.
"""
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

TWISTD = ("import sys; sys.argv[0] = 'twistd'; "
          "from twisted.scripts.twistd import run; run()")


def _repo_files():
    """Files a fresh clone would have, plus new files not yet committed (not ignored ones)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO_ROOT, capture_output=True, check=True).stdout
        return [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache"}
        return [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(REPO_ROOT).parts)]


def _copy_repo(dest):
    for rel in _repo_files():
        src = REPO_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _offline_backend():
    """True if setuptools here can build wheels without downloading anything."""
    try:
        import setuptools
    except ImportError:
        return False
    version = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
    if version >= (70, 1):
        return True          # bdist_wheel is built in
    try:
        import wheel  # noqa: F401
        return version >= (64,)  # editable_mode=compat needs 64+
    except ImportError:
        return False


def _make_venv(path):
    """A pip-less venv that also sees this interpreter's site-packages (for deps and pip)."""
    venv.create(path, with_pip=False, system_site_packages=False, symlinks=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p and os.path.isdir(p)
            and os.path.basename(p) in ("site-packages", "dist-packages")]
    ours.append(sysconfig.get_paths()["purelib"])
    # "zz" sorts after setuptools' __editable__ .pth so the venv's own entries win.
    Path(purelib, "zz-parent-site-packages.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    return python, Path(purelib)


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv, cwd, check=True):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=_env(), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=180)
    if check and proc.returncode != 0:
        pytest.fail(f"{argv} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}"
                    f"\n--- stderr ---\n{proc.stderr}", pytrace=False)
    return proc


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable-compat"])
def test_pip_install_makes_twistd_xmppd_available(tmp_path, editable):
    src = _copy_repo(tmp_path / "src")
    python, purelib = _make_venv(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    pip = [python, "-m", "pip", "install", "--no-deps", "--quiet"]
    if _offline_backend():
        pip += ["--no-build-isolation", "--no-index"]
    if editable:
        pip += ["-e", src, "--config-settings", "editable_mode=compat"]
    else:
        pip += [src]
    _run(pip, cwd=elsewhere)

    # The plugin and the package come from this installation, not from the checkout
    # and not from anything the parent environment may have installed.
    where = _run([python, "-c", "import xmppd, twisted.plugins.xmppd_plugin as p; "
                                "print(xmppd.__file__); print(p.__file__)"], cwd=elsewhere)
    pkg_file, plugin_file = (Path(line) for line in where.stdout.split())
    home = src if editable else purelib
    assert pkg_file == home / "xmppd" / "__init__.py"
    assert plugin_file == home / "twisted" / "plugins" / "xmppd_plugin.py"

    listing = _run([python, "-c", TWISTD, "--help"], cwd=elsewhere)
    assert any(line.split()[:1] == ["xmppd"] for line in listing.stdout.splitlines()), listing.stdout

    help_ = _run([python, "-c", TWISTD, "xmppd", "--help"], cwd=elsewhere)
    for option in ("--config", "--domain", "--c2s-port", "--interface", "--data-dir",
                   "--insecure-auth", "--trace", "--admin"):
        assert option in help_.stdout

    # The console scripts are installed next to the interpreter.
    for script in ("xmppdctl", "xmppd-scansion"):
        assert (python.parent / script).exists()

    if not editable:
        # The distribution must not own Twisted's package files: only our modules and the plugin.
        files = _run([python, "-c", "import importlib.metadata as m; "
                                    "print('\\n'.join(str(f) for f in m.files('xmppd')))"],
                     cwd=elsewhere).stdout.split()
        installed = [f for f in files if not f.startswith(("../", "xmppd-"))
                     and "__pycache__" not in f]
        assert installed, files
        assert all(f.startswith("xmppd/") or f in ("twisted/plugins/xmppd_plugin.py",
                                                   "twisted/plugins/xmppd_muc_plugin.py")
                   for f in installed), installed
        assert "twisted/__init__.py" not in files and "twisted/plugins/__init__.py" not in files


# --- launch files the README promises ------------------------------------------------

def _unit():
    """conf/xmppd.service as {key: [values]} (systemd allows repeated keys)."""
    settings = {}
    for line in (REPO_ROOT / "conf" / "xmppd.service").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_runs_twistd_unprivileged_sandboxed_and_restarting():
    unit = _unit()
    (exec_start,) = unit["ExecStart"]
    argv = exec_start.split()
    assert argv[0].endswith("/twistd")
    assert argv[1:argv.index("xmppd")] and "-n" in argv and "--pidfile=" in argv
    assert argv[argv.index("xmppd") + 1:] == ["--config", "/etc/xmppd/xmppd.toml"]
    assert unit["User"] == ["xmppd"] and unit["Restart"] == ["on-failure"]
    # Config errors (78) and usage errors (64) must not cause a restart loop.
    assert set(unit["RestartPreventExitStatus"][0].split()) == {"64", "78"}
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                       "StateDirectory": "xmppd"}.items():
        assert unit[key] == [value], key
    assert "/var/lib/xmppd" in unit["ReadWritePaths"]


def test_systemd_unit_passes_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # verify checks that ExecStart exists, so point it at a real executable.
    text = (REPO_ROOT / "conf" / "xmppd.service").read_text()
    unit = tmp_path / "xmppd.service"
    unit.write_text(text.replace("/opt/xmppd/bin/twistd", sys.executable))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "xmppd.service" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_readme_commands_exist_and_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    for script in ("scripts/dev-server", "scripts/test"):
        assert f"./{script}" in readme
        assert os.access(REPO_ROOT / script, os.X_OK), script
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    assert "./scripts/test" in ci and os.access(REPO_ROOT / ".ci" / "run", os.X_OK)
    assert "editable_mode=compat" in (REPO_ROOT / "scripts" / "setup-venv").read_text()


def test_dev_server_script_serves_in_insecure_auth_mode(tmp_path):
    """README's run command. Needs the .venv that ./scripts/test (and so CI) creates."""
    if not (REPO_ROOT / ".venv" / ".xmppd-installed").exists():
        pytest.skip("no .venv yet: ./scripts/test creates it")
    from conftest import XmppdServer
    server = XmppdServer(["--c2s-port", "0", "--c2s-direct-tls-port", "0", "--http-port", "0",
                          "--data-dir", tmp_path / "data"],
                         tmp_path / "data",
                         command=[REPO_ROOT / "scripts" / "dev-server"])
    try:
        server.wait_listening()
        log = server.log()
        assert "INSECURE AUTH" in log and "twistd" in log
        assert str(REPO_ROOT / ".venv") in log          # twistd from the project venv
        assert (tmp_path / "data" / "xmppd-dev-cert.pem").exists()
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' "
                         b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                         b"version='1.0'>")
            data = b""
            while b"</stream:features>" not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            assert b"<mechanism>PLAIN</mechanism>" in data
    finally:
        server.stop()
    assert "Server Shut Down" in server.log()


def test_readme_slixmpp_example_logs_in_and_sends(xmppd_server):
    """The README's client snippet works as printed (only the cert path and port differ)."""
    import re
    code = re.search(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)[1]
    cert = xmppd_server.data_dir / "xmppd-dev-cert.pem"
    assert '"xmppd-data/xmppd-dev-cert.pem"' in code and '"127.0.0.1", 5222' in code
    code = (code.replace('"xmppd-data/xmppd-dev-cert.pem"', repr(str(cert)))
                .replace('"127.0.0.1", 5222', f'"127.0.0.1", {xmppd_server.port}'))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    xmppd_server.wait_for_log(r"authenticated as alice@localhost/laptop")
    xmppd_server.wait_for_log(r"connection closed \(alice@localhost/laptop\)")
