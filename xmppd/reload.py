"""Reload on SIGHUP (``systemctl reload xmppd``): re-read the config and the certificates.

The new configuration is loaded and validated exactly like at start-up
(same file, same command-line flags on top) and the TLS context is built
from it *before* anything changes: a bad file, an unreadable or mismatched
certificate leaves the server on the old configuration with one error line.

Then, on the live ``cfg`` object that every part of the server reads:

* restart-only keys (``domain``, ``muc_domain``, ``data_dir``, storage and
  component settings) keep their
  old value and are named in one log line;
* every other key takes its new value: limits, admins, trace, log level,
  MUC defaults; parts that derived state from the config at start-up
  (the c2s TLS context and per-IP limits, the MUC's admin set and default
  room visibility) are refreshed; new TLS connections get the new
  certificate, established ones keep theirs;
* listeners whose address changed (``interface``/``c2s_port``,
  ``metrics_*``) are bound anew, and the old one closed only once the new
  one listens;
* ``router.hooks`` fires ``server/reload`` (``Event(cfg, changed)``) so
  feature modules can refresh their own state.
"""
import dataclasses
import signal

from twisted.application import service
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from xmppd import config as configmod
from xmppd.events import Event

log = Logger(namespace="xmppd.reload")

RESTART_ONLY = ("domain", "muc_domain", "data_dir", "storage", "storage_dsn", "components",
                "component_port", "component_interface", "c2s_direct_tls_port",
                "allow_registration", "max_registrations_per_ip", "registration_window", "accounts",
                "http_port", "http_interface", "http_tls_port", "http_cors_origins",
                "upload_domain", "web_client_assets")


class Reloader:
    def __init__(self, cfg, load, router, c2s=None, muc=None, metrics=None, systemd=None,
                 sessions=None):
        """``load()`` returns a freshly validated Config (raises ConfigError)."""
        self.cfg, self.load, self.router = cfg, load, router
        self.c2s, self.muc, self.metrics, self.systemd = c2s, muc, metrics, systemd
        self.sessions = sessions    # xmppd.session.SessionManager (c2s is the TCP listener)
        self.count = 0

    def install_signal(self):
        def on_hup(signum, frame):
            reactor.callFromThread(self.reload)
        signal.signal(signal.SIGHUP, on_hup)

    def reload(self):
        """Apply a re-read configuration; returns (ok, message) for callers such as xmppdctl."""
        if self.systemd is not None:
            self.systemd.reloading()
        try:
            ok, message = self._reload()
        except Exception:
            log.failure("reload failed; keeping the running configuration")
            ok, message = False, "reload failed (see the log)"
        if self.systemd is not None:
            self.systemd.reloaded("serving" if ok else f"serving; last reload failed: {message}")
        return ok, message

    def _reload(self):
        cfg = self.cfg
        try:
            new = self.load()
            tls_factory = direct_factory = None
            if self.c2s is not None:
                from xmppd.transports import tls as tlsmod
                tls_factory = tlsmod.context_factory(new)
                if getattr(self.c2s, "direct_tls_factory", None) is not None:
                    direct_factory = tlsmod.context_factory(new, b"xmpp-client")
        except configmod.ConfigError as e:
            log.error("reload rejected, keeping the running configuration: {err}", err=str(e))
            return False, f"rejected: {e}"
        old = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        changed = {k for k, v in old.items() if getattr(new, k) != v}
        fixed = sorted(k for k in changed if k in RESTART_ONLY)
        if fixed:
            log.warn("reload: {keys} cannot change at runtime (restart to apply); kept",
                     keys=", ".join(fixed))
        changed -= set(fixed)
        for k in changed:
            setattr(cfg, k, getattr(new, k))
        self.count += 1
        problems = []
        if self.c2s is not None:
            problems += self._c2s(tls_factory, direct_factory, changed)
        if self.muc is not None:
            self._muc(changed)
        if self.metrics is not None and changed & {"metrics_port", "metrics_interface"}:
            problems += self._rebind_metrics()
        from xmppd import logs
        logs.set_level(cfg.log_level)
        self.router.trace = cfg.trace
        self.router.hooks.fire("server/reload", Event(cfg=cfg, changed=set(changed)))
        log.info("reloaded configuration (#{n}); changed: {keys}; certificate reloaded",
                 n=self.count, keys=", ".join(sorted(changed)) or "nothing")
        if problems:
            return False, "; ".join(problems)
        return True, "reloaded" + (f" ({', '.join(sorted(changed))})" if changed else "")

    def _c2s(self, tls_factory, direct_factory, changed):
        from xmppd.transports import limits
        c2s, cfg, sessions = self.c2s, self.cfg, self.sessions
        # The listeners hold the factory objects and ask them for a context per
        # connection: swapping the context inside serves the new certificate.
        c2s.tls_factory._ctx = tls_factory._ctx
        c2s.tls_factory.cert_path = tls_factory.cert_path
        if direct_factory is not None:
            c2s.direct_tls_factory._ctx = direct_factory._ctx
        c2s.limits.exempt = limits.Exempt(cfg.limits_exempt)
        c2s.limits.conn_limit.limit = cfg.max_connections_per_ip
        c2s.send_guard.limit = cfg.max_send_buffer
        for xs in list(c2s.streams):
            xs.trace = cfg.trace
        if sessions is not None:
            sessions.encryption_required = cfg.encryption_required
            sessions._features.clear()
            t = sessions.auth_throttle
            t.per_account, t.per_ip, t.window = (cfg.max_auth_failures_per_account,
                                                 cfg.max_auth_failures_per_ip,
                                                 cfg.auth_failure_window)
            for s in list(sessions.sessions):
                s.trace = cfg.trace
        if changed & {"interface", "c2s_port"} and c2s.port is not None:
            try:
                port = reactor.listenTCP(cfg.c2s_port, c2s.factory, interface=cfg.interface)
            except CannotListenError as e:
                log.error("reload: cannot listen on {iface}:{port} ({err}); keeping the old "
                          "listener", iface=cfg.interface, port=cfg.c2s_port, err=e.socketError)
                return [f"cannot listen on {cfg.interface}:{cfg.c2s_port}"]
            old, c2s.port = c2s.port, port
            old.stopListening()
            log.info("c2s listening on {iface}:{port}", iface=cfg.interface,
                     port=port.getHost().port)
        return []

    def _muc(self, changed):
        from xmppd import jid as jidlib
        muc, cfg = self.muc, self.cfg
        admins = set()
        for a in cfg.admins:
            j = jidlib.parse_or_none(a)
            if j is not None:
                admins.add(j.userhost())
        muc.admins = admins
        muc.default_config["public"] = bool(cfg.muc_room_default_public)

    def _rebind_metrics(self):
        m = self.metrics
        old = m.port
        m.port = None
        if old is not None:
            old.stopListening()
        if self.cfg.metrics_port:
            from xmppd import metrics
            try:
                m.port = metrics.listen(self.cfg, m.registry)
            except CannotListenError as e:
                log.error("reload: metrics cannot listen: {err}", err=e.socketError)
                return ["metrics cannot listen"]
            log.info("metrics listening on http://{iface}:{port}/metrics",
                     iface=self.cfg.metrics_interface, port=m.port.getHost().port)
        return []


class ReloadService(service.Service):
    """Installs the SIGHUP handler once the server runs, restores the old one on stop."""

    def __init__(self, reloader):
        self.reloader = reloader
        self._old = None

    def startService(self):
        super().startService()
        self._old = signal.getsignal(signal.SIGHUP)
        self.reloader.install_signal()

    def stopService(self):
        super().stopService()
        if self._old is not None:
            signal.signal(signal.SIGHUP, self._old)
