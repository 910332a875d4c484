"""Assemble the running server from its layers (used by twistd and by tests)."""
from twisted.application import service


def build(cfg, load=None):
    """Return a MultiService holding every part of the server for ``cfg``.

    Wiring only; each layer lives in its own package:
    storage -> router -> services (server's own IQs) -> muc component -> c2s,
    then operations: metrics, systemd notification, reload on SIGHUP
    (``load()`` re-reads the configuration; without it SIGHUP is ignored).
    """
    from xmppd.router import Router
    from xmppd import control, metrics, reload, storage, services, systemd
    from xmppd.stream import c2s
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
    c2s_service = c2s.C2SService(cfg, router, store)
    c2s_service.setServiceParent(root)
    root.router = router
    root.view = metrics.Server(router, store, c2s_service)
    metrics_service = metrics.MetricsService(cfg, root.view)
    metrics_service.setServiceParent(root)
    notifier = systemd.SystemdService()
    notifier.setServiceParent(root)
    if load is not None:
        root.reloader = reload.Reloader(cfg, load, router, c2s_service, router.muc, metrics_service,
                                        notifier)
        reload.ReloadService(root.reloader).setServiceParent(root)
    control.ControlService(cfg, root).setServiceParent(root)
    return root
