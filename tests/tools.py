"""External tools some tests need (Prosody, PostgreSQL, node packages, chromium).

``.ci/run`` installs them. In CI (``CI`` set in the environment) a missing
tool fails the test; a developer without it gets a skip that says how to
install it, so the suite still runs on a laptop.
"""
import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
JS_DIR = REPO_ROOT / "tests" / "js"


def missing(what, how):
    """Fail in CI, skip elsewhere, naming ``how`` to get ``what``."""
    msg = f"{what} is not available; {how} (CI installs it through .ci/run)"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def require_command(name, how=None):
    """The absolute path of the executable ``name`` (searching the sbin dirs too)."""
    path = shutil.which(name) or shutil.which(
        name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin",
                                    "/usr/lib/postgresql/15/bin"]))
    if not path:
        missing(name, how or f"install it, e.g. `apt-get install {name}`")
    return path


def require_node_module(name):
    """The directory of node package ``name`` under tests/js/node_modules."""
    require_command("node", "install Node.js >= 20 (`apt-get install nodejs npm`)")
    path = JS_DIR / "node_modules" / name
    if not path.is_dir():
        missing(f"node package {name}", "run `npm ci --prefix tests/js`")
    return path
