"""Prometheus / OpenMetrics metrics: what the server is doing, at next to no cost.

Two kinds of figures:

* **Counted on the hot path** (bytes and stanzas in/out, MUC messages):
  plain integer attributes of the module-level :data:`STATS`, bumped with
  one ``+=`` by the transports and the MUC (tens of nanoseconds; no lock,
  no label lookup: the reactor is one thread). ``prometheus_client``'s
  own Counter would take a lock per increment.
* **Read at scrape time** from state the server keeps anyway: connections
  by state, sessions, online users, rooms and occupants, offline messages,
  the storage writer's queue. Nothing is maintained for them between
  scrapes.

Histograms for storage commit latency, reactor lag and GC pauses use
``prometheus_client`` directly: commits are observed on the writer thread
(its histogram is thread-safe), the lag by a timer twice a second, GC
pauses by a ``gc.callbacks`` hook.

The registry is served as ``/metrics`` in the Prometheus text format
(OpenMetrics when the scraper asks for it) on the HTTP listener and, when
set, on its own ``metrics_port``; on both only to the peers listed in
``metrics_allow`` (loopback by default), 403 for anyone else.
"""
import time

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from twisted.application import service
from twisted.internet import reactor
from twisted.logger import Logger

log = Logger(namespace="xmppd.metrics")

KINDS = ("message", "presence", "iq")
LAG_INTERVAL = 0.5


class Stats:
    """Hot-path counters: one attribute per figure (``STATS.bytes_in += n``)."""

    __slots__ = ("bytes_in", "bytes_out", "stanzas_in", "stanzas_out", "muc_messages", "logins",
                 "login_failures", "started")

    def __init__(self):
        self.reset()

    def reset(self):
        for name in self.__slots__:
            setattr(self, name, 0)
        # stanzas read from clients by kind; callers count only these three names
        self.stanzas_in = {"message": 0, "presence": 0, "iq": 0}
        self.logins = {}            # mechanism -> count (not on the hot path)
        self.login_failures = {}
        self.started = time.time()

    def login(self, mechanism, ok):
        d = self.logins if ok else self.login_failures
        mechanism = mechanism if mechanism in _MECHANISMS else "other"
        d[mechanism] = d.get(mechanism, 0) + 1


_MECHANISMS = frozenset(("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                         "SCRAM-SHA-256-PLUS", "EXTERNAL", "ANONYMOUS"))

STATS = Stats()

COMMIT_SECONDS = Histogram(
    "xmppd_storage_commit_seconds", "Time to run and commit one storage write (writer thread)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=None)
GC_PAUSE = Histogram(
    "xmppd_gc_pause_seconds", "Pauses of Python's cyclic garbage collector, by generation",
    labelnames=("generation",),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=None)
REACTOR_LAG = Histogram(
    "xmppd_reactor_lag_seconds", "How late a timer fires on the reactor (sampled twice a second)",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
             0.25, 0.5, 1.0, 2.5),
    registry=None)


class ServerCollector:
    """Builds the metric families at scrape time from the live server."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        s = STATS
        srv = self.server
        router = srv.router
        c = CounterMetricFamily("xmppd_stanzas", "Stanzas from and to clients",
                                labels=("direction", "kind"))
        for kind, n in s.stanzas_in.items():
            c.add_metric(("in", kind), n)
        c.add_metric(("out", "all"), s.stanzas_out)
        yield c
        c = CounterMetricFamily("xmppd_bytes", "XMPP bytes read from and written to clients: TCP "
                                "streams, WebSocket messages, BOSH bodies (no TLS/HTTP framing)",
                                labels=("direction",))
        c.add_metric(("in",), s.bytes_in)
        c.add_metric(("out",), s.bytes_out)
        yield c
        c = CounterMetricFamily("xmppd_logins", "Authentication attempts by SASL mechanism",
                                labels=("mechanism", "result"))
        for mech, n in sorted(s.logins.items()):
            c.add_metric((mech, "ok"), n)
        for mech, n in sorted(s.login_failures.items()):
            c.add_metric((mech, "failed"), n)
        yield c
        yield CounterMetricFamily("xmppd_muc_messages", "Groupchat messages sent to rooms",
                                  value=s.muc_messages)

        g = GaugeMetricFamily("xmppd_connections", "Open client connections by state",
                              labels=("state",))
        for state, n in sorted(srv.connection_states().items()):
            g.add_metric((state,), n)
        yield g
        yield GaugeMetricFamily("xmppd_sessions", "Bound client sessions (resources)",
                                value=len(router.sessions.full))
        yield GaugeMetricFamily("xmppd_online_users", "Accounts with at least one session",
                                value=len(router.sessions.bare))
        muc = getattr(router, "muc", None)
        rooms = getattr(muc, "rooms", None) or {}
        yield GaugeMetricFamily("xmppd_muc_rooms", "Live MUC rooms", value=len(rooms))
        yield GaugeMetricFamily("xmppd_muc_occupants", "Occupants in all MUC rooms",
                                value=sum(len(r.occupants) for r in list(rooms.values())))
        yield GaugeMetricFamily("xmppd_offline_messages", "Stored offline messages (all accounts)",
                                value=srv.offline_count())
        yield GaugeMetricFamily("xmppd_storage_writer_queue",
                                "Storage writes queued or running on the writer thread",
                                value=srv.writer_queue())
        archive = getattr(srv.store, "archive", None)
        if archive is not None:
            yield GaugeMetricFamily("xmppd_archive_pending",
                                    "Archived messages waiting for the storage writer",
                                    value=len(archive._pending))
            yield CounterMetricFamily("xmppd_archive_dropped",
                                      "Messages not archived because the writer was stuck",
                                      value=archive.dropped)
        yield CounterMetricFamily("xmppd_input_pauses",
                                  "Times reading from clients paused for back-pressure",
                                  value=srv.input_pauses())
        yield GaugeMetricFamily("xmppd_uptime_seconds", "Seconds since the server started",
                                value=time.time() - s.started)


class Server:
    """The view of the running server that the collector and ``xmppdctl status`` read."""

    def __init__(self, router, store, sessions=None):
        self.router = router
        self.store = store
        self.sessions = sessions    # xmppd.session.SessionManager: every transport's sessions
        self.pause = None           # transports.limits.InputPause

    def connection_states(self):
        states = {"unauthenticated": 0, "bound": 0}
        sessions = getattr(self.sessions, "sessions", None) or ()
        for s in list(sessions):
            states["bound" if s.bound else "unauthenticated"] += 1
        return states

    def offline_count(self):
        try:
            return self.store.db.query("SELECT COUNT(*) FROM offline_messages")[0][0]
        except Exception:
            return float("nan")

    def input_pauses(self):
        return self.pause.count if self.pause is not None else 0

    def writer_queue(self):
        writer = getattr(self.store, "writer", None)
        return getattr(writer, "pending", 0)


def make_registry(server):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    registry.register(COMMIT_SECONDS)
    registry.register(REACTOR_LAG)
    registry.register(GC_PAUSE)
    try:
        ProcessCollector(namespace="xmppd", registry=registry)
    except Exception:      # no /proc (not Linux): no process figures
        pass
    return registry


class GCTimer:
    """Times every collection of the cyclic GC (``gc.callbacks``) into :data:`GC_PAUSE`.

    A full collection walks every tracked object; with thousands of sessions
    it is the longest pause the reactor takes, so it is worth seeing. Cost: two
    Python calls per collection, 1.2 us; a chat load of 13 800 messages/s runs
    about 200 collections a second (0.02 % of a core). Any thread may run a
    collection: the histogram is thread-safe, collections never overlap.
    """

    def __init__(self):
        self._children = [GC_PAUSE.labels(str(g)) for g in range(3)]
        self._t0 = 0.0

    def __call__(self, phase, info, perf=time.perf_counter):
        if phase == "start":
            self._t0 = perf()
        else:
            self._children[info["generation"]].observe(perf() - self._t0)

    def start(self):
        import gc
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def stop(self):
        import gc
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class LagProbe:
    """Measures reactor lag: how much later than asked a timer runs."""

    def __init__(self, interval=LAG_INTERVAL):
        self.interval = interval
        self._call = None
        self._expected = None
        self.last = 0.0

    def start(self):
        self._expected = time.monotonic() + self.interval
        self._call = reactor.callLater(self.interval, self._tick)

    def _tick(self):
        now = time.monotonic()
        self.last = lag = max(0.0, now - self._expected)
        REACTOR_LAG.observe(lag)
        self._expected = now + self.interval
        self._call = reactor.callLater(self.interval, self._tick)

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def render(registry, accept=""):
    """(body, content type) for a scrape; OpenMetrics when the Accept header asks for it."""
    from prometheus_client import exposition
    encoder, content_type = exposition.choose_encoder(accept or "")
    return encoder(registry), content_type


class Allowed:
    """Is a peer address in ``cfg.metrics_allow``? (Read live, so SIGHUP changes it.)"""

    def __init__(self, cfg):
        self.cfg = cfg
        self._key = None
        self._match = None

    def __contains__(self, host):
        nets = self.cfg.metrics_allow
        if self._key != nets:
            from xmppd.transports.limits import Exempt
            self._key, self._match = list(nets), Exempt(nets)
        return host in self._match


def metrics_resource(registry, cfg):
    """A twisted.web resource serving ``registry`` to the peers in ``cfg.metrics_allow``.

    Mounted at ``/metrics`` on the HTTP listener and on ``metrics_port``. The
    figures have no authentication, so anyone else gets 403: loopback only by
    default. The check is on the TCP peer (a reverse proxy in front is that peer).
    """
    from twisted.web import resource

    allowed = Allowed(cfg)

    class Metrics(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            peer = getattr(request.getClientAddress(), "host", None)
            if peer not in allowed:
                request.setResponseCode(403)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return b"forbidden: this address is not in metrics_allow\n"
            accept = (request.getHeader("accept") or "")
            body, ctype = render(registry, accept)
            request.setHeader(b"content-type", ctype.encode())
            request.setHeader(b"cache-control", b"no-store")
            return body

    return Metrics()


def listen(cfg, registry):
    """Serve /metrics on ``cfg.metrics_interface:cfg.metrics_port`` (a twisted.web Site)."""
    from twisted.web import resource, server
    root = resource.Resource()
    root.putChild(b"metrics", metrics_resource(registry, cfg))
    site = server.Site(root)
    site.noisy = False
    site.log = lambda request: None    # no access log line per scrape
    return reactor.listenTCP(cfg.metrics_port, site, interface=cfg.metrics_interface)


class MetricsService(service.Service):
    """Starts the lag probe and, when ``metrics_port`` is set, the /metrics listener."""

    def __init__(self, cfg, server):
        self.cfg = cfg
        self.server = server
        self.registry = make_registry(server)
        self.lag = LagProbe()
        self.gc = GCTimer()
        self.port = None

    def startService(self):
        super().startService()
        STATS.started = time.time()
        self.lag.start()
        self.gc.start()
        if self.cfg.metrics_port:
            self.port = listen(self.cfg, self.registry)
            log.info("metrics listening on http://{iface}:{port}/metrics",
                     iface=self.cfg.metrics_interface, port=self.port.getHost().port)

    def stopService(self):
        super().stopService()
        self.lag.stop()
        self.gc.stop()
        if self.port is not None:
            d, self.port = self.port.stopListening(), None
            return d
