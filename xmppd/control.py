"""The admin socket: ``xmppdctl status|sessions|kick|announce|reload|reset|deluser`` on the live server.

A UNIX socket ``<data_dir>/xmppd.sock``, mode 0600, never a network port;
a connecting process must also run as the server's user or as root (checked
with SO_PEERCRED). One JSON object per line each way:
``{"cmd": "kick", "arg": "alice@example.org"}`` ->
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.

It complements the ``admin_requests`` table rather than replacing it: the
table is how ``xmppdctl room-destroy`` reaches whichever process hosts the
room (a separate ``xmppd-muc`` node on a shared database, or a server that
starts later), while these commands only make sense for the live process
that owns the sessions.

``reset`` (clean slate for client test suites, like Prosody's test reset
module) ends every session, destroys every room, empties every table and
forgets login throttling; it is refused unless the server runs with
``--insecure-auth`` or ``allow_reset = true``.
"""
import json
import os
import socket
import struct
import time

from twisted.application import service
from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

import xmppd

log = Logger(namespace="xmppd.control")

SOCKET_NAME = "xmppd.sock"
MAX_LINE = 64 * 1024
MAX_LISTED = 10_000


def socket_path(data_dir):
    return os.path.join(data_dir, SOCKET_NAME)


def rss_bytes():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class CommandError(Exception):
    pass


class NotRunning(CommandError):
    """Nothing listens on the socket: the server is not running (or uses another data dir)."""


class Commands:
    """What each command does; ``server`` is the tree built by :func:`xmppd.server.build`."""

    def __init__(self, cfg, root):
        self.cfg = cfg
        self.root = root
        self.started = time.time()

    @property
    def router(self):
        return self.root.router

    def run(self, cmd, arg):
        fn = getattr(self, "cmd_" + str(cmd).replace("-", "_"), None)
        if fn is None:
            raise CommandError(f"unknown command {cmd!r}")
        return fn(arg)

    def cmd_status(self, arg):
        router = self.router
        muc = getattr(router, "muc", None)
        rooms = getattr(muc, "rooms", None) or {}
        return {
            "version": xmppd.__version__, "pid": os.getpid(), "domain": self.cfg.domain,
            "uptime": round(time.time() - self.started, 1),
            "sessions": len(router.sessions.full), "online_users": len(router.sessions.bare),
            "connections": self.root.view.connection_states(),
            "rooms": len(rooms), "occupants": sum(len(r.occupants) for r in list(rooms.values())),
            "memory_rss": rss_bytes(),
        }

    def cmd_sessions(self, arg):
        out = []
        for full, s in sorted(self.router.sessions.full.items())[:MAX_LISTED]:
            out.append({"jid": full, "peer": getattr(getattr(s, "transport", None), "peer", None),
                        "available": bool(getattr(s, "available", False)),
                        "priority": getattr(s, "priority", 0)})
        return out

    def cmd_kick(self, arg):
        admin = self.router.admin
        try:
            _, j = admin.local_user(arg)
        except Exception as e:
            raise CommandError(str(e))
        n = admin.end_sessions(admin.sessions_of(j))
        log.info("xmppdctl kick {jid}: {n} session(s) ended", jid=arg, n=n)
        return {"ended": n}

    def cmd_deluser(self, arg):
        """``xmppdctl deluser`` while the server runs: data, caches and sessions together."""
        from xmppd.services.accounts import delete_account
        from xmppd.storage.accounts import AccountError
        admin = self.router.admin
        if not isinstance(arg, str) or not arg.strip():
            raise CommandError("name the account to delete: a username or a bare JID")
        try:
            username, j = admin.local_user(arg)
        except Exception as e:
            raise CommandError(str(e))
        if j.resource is not None:
            raise CommandError("give a username or a bare JID")
        d = delete_account(self.router, self.root.view.store, self.cfg, username)

        def done(n):
            log.info("xmppdctl deluser {jid}: deleted, {n} session(s) ended", jid=j.userhost(), n=n)
            return {"jid": j.userhost(), "ended": n}

        def failed(f):
            f.trap(AccountError)
            raise CommandError(str(f.value))
        return d.addCallbacks(done, failed)

    def cmd_announce(self, arg):
        text = str(arg or "")
        if not text.strip():
            raise CommandError("the announcement is empty")
        if len(text) > 4096:
            raise CommandError("the announcement is too long (at most 4096 characters)")
        n = self.router.admin.announce(text)
        log.info("xmppdctl announce: sent to {n} session(s)", n=n)
        return {"sent": n}

    def cmd_reload(self, arg):
        reloader = getattr(self.root, "reloader", None)
        if reloader is None:
            raise CommandError("this server cannot reload (started without a configuration loader)")
        ok, message = reloader.reload()
        if not ok:
            raise CommandError(message)
        return message

    def cmd_reset(self, arg):
        if not (self.cfg.insecure_auth or self.cfg.allow_reset):
            raise CommandError("reset refused: the server runs without --insecure-auth and "
                               "allow_reset is false")
        from xmppd import storage
        router = self.router
        # Rooms first: their occupants get the destroy notice, and a temporary
        # room does not vanish on its own as its last occupant's session ends.
        muc = getattr(router, "muc", None)
        rooms = 0
        if muc is not None:
            for room in list(muc.rooms.values()):
                if not getattr(room, "destroying", False):
                    room.destroy(reason="The server was reset")
                    rooms += 1
        sessions = list(router.sessions.full.values())
        router.admin.end_sessions(sessions)
        throttle = getattr(getattr(self.root, "sessions", None), "auth_throttle", None)
        if throttle is not None:
            throttle.failures.clear()
        store = self.root.view.store
        d = store.write(storage.clear_all_data)

        def done(_):
            router.admin.motd = None
            log.warn("xmppdctl reset: {s} session(s) ended, {r} room(s) destroyed, all data "
                     "deleted", s=len(sessions), r=rooms)
            return {"sessions": len(sessions), "rooms": rooms}
        return d.addCallback(done)


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def connectionMade(self):
        if not self._peer_allowed():
            self._send({"ok": False, "error": "permission denied"})
            self.transport.loseConnection()

    def _peer_allowed(self):
        try:
            sock = self.transport.getHandle()
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except (OSError, AttributeError):
            return True      # no SO_PEERCRED here: the 0600 file mode is the check
        return uid in (0, os.getuid())

    def lineLengthExceeded(self, line):
        self._send({"ok": False, "error": "request too long"})
        self.transport.loseConnection()

    def lineReceived(self, line):
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            self._send({"ok": False, "error": "malformed request (one JSON object per line)"})
            return
        d = defer.maybeDeferred(self.factory.commands.run, req.get("cmd"), req.get("arg"))

        def ok(result):
            self._send({"ok": True, "result": result})

        def failed(f):
            if f.check(CommandError):
                self._send({"ok": False, "error": str(f.value)})
            else:
                log.failure("admin socket command {cmd} failed", f, cmd=req.get("cmd"))
                self._send({"ok": False, "error": "internal error (see the server log)"})
        d.addCallbacks(ok, failed)

    def _send(self, obj):
        if self.transport is not None and self.connected:
            self.sendLine(json.dumps(obj).encode())


class ControlService(service.Service):
    def __init__(self, cfg, root):
        self.cfg = cfg
        self.factory = protocol.ServerFactory.forProtocol(ControlProtocol)
        self.factory.noisy = False
        self.factory.commands = Commands(cfg, root)
        self.port = None
        self.path = socket_path(cfg.data_dir)

    def startService(self):
        super().startService()
        if len(self.path.encode()) > 100:
            log.warn("admin socket disabled: the path {path} is too long for a UNIX socket",
                     path=self.path)
            return
        # We hold the data-dir lock: a socket file left here is from a dead server.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.port = reactor.listenUNIX(self.path, self.factory, mode=0o600)
        os.chmod(self.path, 0o600)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            d, self.port = self.port.stopListening(), None
            try:
                os.unlink(self.path)
            except OSError:
                pass
            return d


def request(data_dir, cmd, arg=None, timeout=30.0):
    """Send one command to the server using ``data_dir``; returns the result or raises CommandError."""
    path = socket_path(data_dir)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except FileNotFoundError:
            raise NotRunning(f"no running server: {path} does not exist")
        except ConnectionRefusedError:
            raise NotRunning(f"no running server: nothing listens on {path}")
        except PermissionError:
            raise CommandError(f"permission denied on {path} (run as the server's user)")
        except OSError as e:
            raise CommandError(f"cannot connect to {path}: {e.strerror or e}")
        s.sendall(json.dumps({"cmd": cmd, "arg": arg}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise CommandError(f"the server did not answer within {timeout:.0f} s")
            if not chunk:
                raise CommandError("the server closed the connection without answering")
            buf += chunk
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise CommandError(reply.get("error") or "refused")
    return reply.get("result")
