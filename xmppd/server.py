"""Assemble the running server from its layers (used by twistd and by tests)."""
from twisted.application import service


def build(cfg, load=None):
    """Return a MultiService holding every part of the server for ``cfg``.

    Wiring only; each layer lives in its own package:
    storage -> router -> services (server's own IQs) -> muc component ->
    sessions (xmppd.session) -> transports (xmppd.transports: TCP),
    then operations: metrics, systemd notification, reload on SIGHUP
    (``load()`` re-reads the configuration; without it SIGHUP is ignored).
    """
    from xmppd.router import Router
    from xmppd import control, metrics, reload, storage, services, systemd
    from xmppd.session import SessionManager
    from xmppd.transports import limits, tcp, tls
    from xmppd.muc import service as muc_service

    root = service.MultiService()
    store = storage.open_storage(cfg)
    store.setServiceParent(root)
    if cfg.accounts:
        from xmppd.storage.accounts import provision
        provision(store.db, cfg)
    router = Router(cfg)
    services.install(router, cfg, store)
    if any(c["domain"] == cfg.muc_domain for c in cfg.components):
        router.muc = None  # the MUC runs as an external component (twistd xmppd-muc)
    else:
        muc = muc_service.make_component(router, cfg, store)
        muc.setServiceParent(root)
        router.muc = muc.muc   # live rooms, for xmppdctl requests (xmppd.services.admin_requests)
    if cfg.components:
        from xmppd.component.server import ComponentService
        ComponentService(cfg, router).setServiceParent(root)
    tls_factory = tls.context_factory(cfg)       # ConfigError early, before listening
    direct_tls_factory = (tls.context_factory(cfg, b"xmpp-client")
                          if cfg.c2s_direct_tls_port >= 0 else None)
    client_limits = limits.ClientLimits(cfg)     # shared by every client transport
    manager = SessionManager(cfg, router, store)
    from xmppd.session import csi, sm
    csi.install(manager, sm.install(manager))   # XEP-0352 holds before XEP-0198 counts
    manager.events.add("session-unbound", router.carbons.forget)   # XEP-0280 flag ends with it
    from xmppd.services import server_caps
    server_caps.install(manager, router, cfg)     # XEP-0115 §6.3 <c/> in the stream features
    router.push.install_sessions(manager)    # XEP-0357: hibernation (XEP-0198) and logins
    manager.setServiceParent(root)
    c2s_service = tcp.TCPListener(manager, client_limits, tls_factory, direct_tls_factory)
    c2s_service.setServiceParent(root)
    client_limits.pause.groups.append(c2s_service.streams)
    if getattr(store, "archive", None) is not None:    # back-pressure, not dropped messages
        store.archive.pressure = lambda on: client_limits.pause.hold("archive behind", on)
    if cfg.http_port >= 0:
        from xmppd.http import HTTPService
        root.http = HTTPService(manager, client_limits, tls_factory)
        root.http.mount_upload(router, cfg.data_dir)
        root.http.setServiceParent(root)
        client_limits.pause.groups.append(root.http.streams)
    root.router = router
    root.sessions = manager
    root.view = metrics.Server(router, store, manager)
    root.view.pause = client_limits.pause
    metrics_service = metrics.MetricsService(cfg, root.view)
    metrics_service.setServiceParent(root)
    if cfg.http_port >= 0:
        root.http.root.putChild(b"metrics", metrics.metrics_resource(metrics_service.registry, cfg))
    notifier = systemd.SystemdService()
    notifier.setServiceParent(root)
    if load is not None:
        root.reloader = reload.Reloader(cfg, load, router, c2s_service, router.muc, metrics_service,
                                        notifier, sessions=manager)
        reload.ReloadService(root.reloader).setServiceParent(root)
    control.ControlService(cfg, root).setServiceParent(root)
    return root
