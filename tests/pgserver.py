"""A private PostgreSQL for the tests: Debian's ``postgresql`` binaries, initdb in a
temporary directory, loopback only, a free port, run as the ``postgres`` user when the
tests run as root (initdb refuses root). One cluster per test session; every test gets
its own empty database (``pg_dsn``). In CI a missing PostgreSQL fails (tests/tools.py).

``fsync=off``: the durability tests kill xmppd, not PostgreSQL, so a commit only has to
reach PostgreSQL's memory to survive them; the benchmarks use the default settings.
"""
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from tools import require_command


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self, fsync=False):
        initdb = require_command("initdb", "install PostgreSQL (`apt-get install postgresql`)")
        bindir = os.path.dirname(initdb)
        self.root = tempfile.mkdtemp(prefix="xmppd-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        self.prefix = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        r = subprocess.run(self.prefix + [initdb, "-D", self.data, "-A", "trust", "-U", "xmppd",
                                          "-E", "UTF8", "--no-sync", "--no-instructions"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr}")
        args = [os.path.join(bindir, "postgres"), "-D", self.data, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                "-c", "max_connections=200", "-c", "shared_buffers=32MB"]
        if not fsync:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.log = open(os.path.join(self.root, "postgres.log"), "w")
        self.proc = subprocess.Popen(self.prefix + args, stdout=self.log, stderr=subprocess.STDOUT)
        self.counter = itertools.count()
        deadline = time.monotonic() + 30
        import psycopg
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not start")
                time.sleep(0.1)

    def dsn(self, dbname):
        return f"host=127.0.0.1 port={self.port} user=xmppd dbname={dbname}"

    def new_database(self):
        import psycopg
        name = f"t{os.getpid()}_{next(self.counter)}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = PgCluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster):
    """A fresh, empty PostgreSQL database (connection string) for one test."""
    return pg_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Storage settings for a server or a store, once per backend.

    ``backend.args(data_dir)`` are extra server flags; ``backend.config`` the TOML lines.
    """
    return Backend(request.param, request.getfixturevalue("pg_dsn")
                   if request.param == "postgresql" else "")


class Backend:
    def __init__(self, name, dsn):
        self.name = name
        self.dsn = dsn

    @property
    def config(self):
        if self.name == "sqlite":
            return ""
        return f'storage = "postgresql"\nstorage_dsn = "{self.dsn}"\n'

    def server_args(self, data_dir):
        """``--config`` with the storage keys (written into ``data_dir``), or nothing."""
        if self.name == "sqlite":
            return []
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(str(data_dir), "storage.toml")
        with open(path, "w") as fh:
            fh.write(self.config)
        return ["--config", path]

    def check_used(self, server):
        """Fail unless ``server`` logged that it runs on this backend."""
        server.wait_for_log(rf"storage: {self.name} at ")

    def open(self, data_dir):
        """The database the server with ``server_args(data_dir)`` uses."""
        if self.name == "sqlite":
            from xmppd.storage import open_database
            return open_database(str(data_dir))
        from xmppd.storage.postgresql import PgDatabase
        return PgDatabase(self.dsn)

    def __repr__(self):
        return self.name
