"""systemd integration: readiness (Type=notify) and watchdog pings, written by hand.

The protocol is a datagram per state change to the UNIX socket named in
``$NOTIFY_SOCKET`` (sd_notify(3)); a leading ``@`` means the abstract
namespace. ``READY=1`` goes out once the reactor runs, i.e. after every
service's startService bound its listener, so ``systemctl start`` returns
when clients can connect. With ``WatchdogSec=`` set, systemd passes
``$WATCHDOG_USEC`` and expects ``WATCHDOG=1`` at least that often: the
pings come from a reactor timer at half the interval, so a blocked reactor
stops them and systemd restarts the process. Without ``$NOTIFY_SOCKET``
(not under systemd) everything here is a no-op.
"""
import os
import socket

from twisted.application import service
from twisted.internet import reactor, task
from twisted.logger import Logger

log = Logger(namespace="xmppd.systemd")


def notify(state, env=os.environ):
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; False when not under systemd."""
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode("utf-8"), addr)
        return True
    except OSError as e:
        log.warn("systemd notification {state!r} failed: {err}", state=state, err=e)
        return False


def watchdog_interval(env=os.environ):
    """Seconds between watchdog pings (half of WatchdogSec), or None when not asked for."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2_000_000


class SystemdService(service.Service):
    """READY=1 once listening, WATCHDOG=1 from the reactor, STOPPING=1 on shutdown."""

    def __init__(self):
        self.pinger = None

    def startService(self):
        super().startService()
        if os.environ.get("NOTIFY_SOCKET"):
            reactor.callWhenRunning(self.ready)

    def ready(self):
        notify(f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}")
        interval = watchdog_interval()
        if interval:
            self.pinger = task.LoopingCall(notify, "WATCHDOG=1")
            self.pinger.start(interval, now=True)
            log.info("systemd watchdog: pinging every {s:.1f} s", s=interval)

    def reloading(self):
        notify("RELOADING=1")

    def reloaded(self, status="serving"):
        notify(f"READY=1\nSTATUS={status}")

    def stopService(self):
        super().stopService()
        if self.pinger is not None and self.pinger.running:
            self.pinger.stop()
        notify("STOPPING=1")
