"""The HTTP listener (twisted.web): the web face of the server.

One :class:`twisted.web.server.Site` on ``http_port`` (default 5280, on
``http_interface`` or ``interface``) and, when ``http_tls_port`` is set, the
same site over TLS with the c2s certificate. It serves:

=========================== ================================================
``/xmpp-websocket``         XMPP over WebSocket, RFC 7395
                            (:mod:`xmppd.transports.websocket`)
``/``                       the built-in web client page (converse.js),
                            :mod:`xmppd.http.webclient`
``/console``                the live developer console (loopback or
                            ``web_console = true``), :mod:`xmppd.http.console`
``/http-bind``              XMPP over BOSH, XEP-0124/0206
                            (:mod:`xmppd.transports.bosh`)
``/.well-known/host-meta``  XEP-0156 discovery, XRD and ``host-meta.json``
                            (:mod:`xmppd.http.hostmeta`)
``/metrics``                Prometheus/OpenMetrics figures for the peers in
                            ``metrics_allow`` (:mod:`xmppd.metrics`; mounted
                            by :func:`xmppd.server.build`)
=========================== ================================================

Hostile HTTP: request bodies are capped (``max_stanza_size`` plus framing;
413 beyond), a request's headers must arrive within
:data:`HEADER_TIMEOUT` seconds (slowloris), an idle connection is closed
after :data:`IDLE_TIMEOUT` seconds, and twisted.web caps header lines.

CORS (``http_cors_origins``) applies to every resource that answers a
browser's fetch: the discovery documents (and BOSH).
"""
from twisted.application import service
from twisted.internet import reactor
from twisted.logger import Logger
from twisted.web import http, resource, server

from xmppd.http import console, cors, hostmeta, webclient

log = Logger(namespace="xmppd.http")


HEADER_TIMEOUT = 15      # seconds for a request's line and headers
IDLE_TIMEOUT = 75        # seconds without traffic on a connection (> BOSH's longest wait)
BODY_SLACK = 16 * 1024   # bytes a body may exceed max_stanza_size by (the BOSH <body/> wrapper)


class Request(server.Request):
    """A request whose body is refused beyond the site's limit."""

    def gotLength(self, length):
        limit = self._limit()
        if length is not None and length > limit:
            self.channel._respondToBadRequestAndDisconnect()   # 400 and close: never buffered
            return
        self._received = 0
        super().gotLength(length)

    def _limit(self):
        site = self.channel.site
        path = getattr(self.channel, "_path", b"") or b""
        if site.upload_max and path.startswith(b"/upload/"):
            return site.upload_max
        return site.max_body

    def handleContentChunk(self, data):
        self._received = getattr(self, "_received", 0) + len(data)
        if self._received > self._limit():
            self.channel.transport.abortConnection()           # chunked and too large
            return
        super().handleContentChunk(data)


class Channel(http.HTTPChannel):
    """An HTTP connection whose request headers must arrive in time (slowloris)."""

    _headerTimer = None

    def lineReceived(self, line):
        if self._headerTimer is None and not self.transport.disconnecting:
            self._headerTimer = reactor.callLater(HEADER_TIMEOUT, self._headersTooSlow)
        super().lineReceived(line)

    def allHeadersReceived(self):
        self._cancelHeaderTimer()
        super().allHeadersReceived()

    def _cancelHeaderTimer(self):
        if self._headerTimer is not None and self._headerTimer.active():
            self._headerTimer.cancel()
        self._headerTimer = None

    def _headersTooSlow(self):
        self._headerTimer = None
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self._cancelHeaderTimer()
        super().connectionLost(reason)


class Root(resource.Resource):
    """``/``: children are mounted by name; anything else is 404."""


class Site(server.Site):
    noisy = False
    requestFactory = Request
    max_body = 1 << 20
    upload_max = 0

    @staticmethod
    def protocol():
        return http._GenericHTTPChannelProtocol(Channel())

    def log(self, request):   # no access log per request
        pass


class HTTPService(service.Service):
    """Listens on ``http_port`` (and ``http_tls_port``) for the server's web resources."""

    def __init__(self, manager, client_limits, tls_factory):
        from xmppd.transports import websocket
        self.manager = manager
        self.cfg = cfg = manager.cfg
        self.limits = client_limits
        self.tls_factory = tls_factory
        self.streams = set()           # live WebSocket transports
        from xmppd.transports import limits as limitsmod
        self.send_guard = limitsmod.SendBacklogGuard(self.streams, cfg.max_send_buffer)
        self.ports = []
        self.root = Root()
        self.cors = cors.Policy(cfg.http_cors_origins)
        self.ws_factory = websocket.WebSocketListenerFactory(self, cfg.http_cors_origins)
        self.root.putChild(b"xmpp-websocket", websocket.resource(self.ws_factory))
        from xmppd.transports import bosh
        self.bosh = bosh.BOSHResource(self)
        self.root.putChild(b"http-bind", self.bosh)
        well_known = resource.Resource()
        self.root.putChild(b".well-known", well_known)
        well_known.putChild(b"host-meta", hostmeta.HostMeta(self, json=False))
        well_known.putChild(b"host-meta.json", hostmeta.HostMeta(self, json=True))
        self.root.putChild(b"", webclient.mount(self.root, cfg))
        if console.enabled(cfg):
            self.root.putChild(b"console", console.Console(self))
        self.upload = None
        self.port = None
        self.site = Site(self.root, timeout=IDLE_TIMEOUT)
        self.site.max_body = cfg.max_stanza_size + BODY_SLACK
        self.site.displayTracebacks = False

    def urls(self, request):
        """(http base, websocket base) as the client reached us (Host header)."""
        host = request.getRequestHostname().decode("ascii", "replace")
        port = request.getHost().port
        secure = request.isSecure()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme, ws = ("https", "wss") if secure else ("http", "ws")
        default = 443 if secure else 80
        netloc = host if port == default else f"{host}:{port}"
        return f"{scheme}://{netloc}", f"{ws}://{netloc}"

    def mount_upload(self, router, store_dir):
        """XEP-0363: the upload.<domain> service and ``/upload/``."""
        from xmppd.http.upload import UploadResource
        from xmppd.services.upload import UploadService
        from xmppd.storage.files import FileStore
        files = FileStore(store_dir)
        self.upload = UploadService(router, self.cfg, files, self.base_url)
        self.root.putChild(b"upload", UploadResource(self.upload, files, self.cors))
        self.site.upload_max = self.cfg.upload_max_size
        return self.upload

    def base_url(self):
        """The listener's URL for links handed to clients (``upload_url`` when set)."""
        if self.cfg.upload_url:
            return self.cfg.upload_url.rstrip("/")
        host = self.cfg.http_interface or self.cfg.interface
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port or self.cfg.http_port}"

    def startService(self):
        super().startService()
        self.send_guard.start()
        iface = self.cfg.http_interface or self.cfg.interface
        p = reactor.listenTCP(self.cfg.http_port, self.site, interface=iface)
        self.ports.append(p)
        self.port = p.getHost().port
        log.info("http listening on {iface}:{port}", iface=iface, port=p.getHost().port)
        if self.cfg.http_tls_port >= 0:
            from twisted.internet import ssl  # noqa: F401  (the reactor's TLS support)
            p = reactor.listenSSL(self.cfg.http_tls_port, self.site, self.tls_factory,
                                  interface=iface)
            self.ports.append(p)
            log.info("https listening on {iface}:{port}", iface=iface, port=p.getHost().port)
        if self.upload is not None:
            self.upload.start()

    def stopService(self):
        super().stopService()
        self.send_guard.stop()
        for t in list(self.streams):
            t.close_with_error("system-shutdown")
        self.bosh.close_all()
        if self.upload is not None:
            self.upload.stop()
        ports, self.ports = self.ports, []
        from twisted.internet import defer
        return defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
