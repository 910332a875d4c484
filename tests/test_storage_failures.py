"""A write that fails at runtime gets the client an error; the server goes on, nothing stored is lost.

Two real failures, no mocks:

* a full disk: the data dir on a small tmpfs that the test fills up, so SQLite
  gets ENOSPC (SQLITE_FULL) -> ``resource-constraint``; needs root and mount,
  skipped otherwise;
* a write I/O error, unprivileged: the running server's RLIMIT_FSIZE soft limit
  is lowered to the size of its files, so the next commit cannot grow the WAL
  (EFBIG: SQLITE_IOERR_WRITE) -> ``internal-server-error``. CPython ignores
  SIGXFSZ, so the process is not killed by it.
"""
import contextlib
import os
import resource
import subprocess

import pytest

from test_c2s_raw import stanza_error
from test_durability import MUC, MUC_OWNER, form, iq, join
from test_offline import login, make_account, messages, sync

ROOM = "tmp@conference.localhost"


@contextlib.contextmanager
def file_size_limit(server):
    """Lower the soft limit only: raising a hard limit again needs CAP_SYS_RESOURCE."""
    pid = server.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    limit = max(p.stat().st_size for p in server.data_dir.iterdir() if p.is_file())
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def disk_full(server):
    filler = server.data_dir / "filler"
    with open(filler, "wb", buffering=0) as f:    # unbuffered: close() has nothing left to fail
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    try:
        yield
    finally:
        filler.unlink()


def check_failing_writes(server, failure, condition):
    make_account(server, "juliet")
    romeo = login(server, "romeo")
    romeo.send("<message to='juliet@localhost' type='chat' id='before'><body>stored</body></message>")
    sync(romeo)

    with failure(server):
        big = "x" * 20000
        romeo.send(f"<message to='juliet@localhost' type='chat' id='full'><body>{big}</body></message>")
        el = romeo.next()
        assert el.get("id") == "full" and el.get("type") == "error"
        assert stanza_error(el)[1] == condition
        sync(romeo)       # still serving

    romeo.send("<message to='juliet@localhost' type='chat' id='after'><body>ok</body></message>")
    sync(romeo)
    romeo.nothing()
    juliet = login(server, "juliet", presence="<presence/>")
    assert [m.get("id") for m in messages(juliet)] == ["before", "after"]
    assert server.returncode is None


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
def test_write_io_error_gives_internal_server_error_and_the_server_keeps_running(xmppd_server):
    check_failing_writes(xmppd_server, file_size_limit, "internal-server-error")


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small filesystem")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_gives_resource_constraint_and_the_server_keeps_running(
        small_tmpfs, xmppd_server_factory):   # this order: the server stops before the umount
    server = xmppd_server_factory(data_dir=small_tmpfs / "data")
    check_failing_writes(server, disk_full, "resource-constraint")


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
def test_room_change_that_cannot_be_stored_is_not_acknowledged(xmppd_server):
    owner = login(xmppd_server, "owner")
    assert join(owner, "Boss", room=ROOM)[0] == "ok"
    with file_size_limit(xmppd_server):
        res = iq(owner, f"<query xmlns='{MUC_OWNER}'>" + form({
            "muc#roomconfig_persistentroom": "1", "muc#roomconfig_roomname": "x" * 20000},
            MUC + "#roomconfig") + "</query>", to=ROOM)
        assert xmppd_server.returncode is None
    assert res.get("type") == "error"
    assert stanza_error(res)[1] in ("internal-server-error", "resource-constraint")
