"""What every client session shares, whatever its transport (one per server)."""
from twisted.application import service
from twisted.logger import Logger

from xmppd.auth.sasl import AuthService
from xmppd.auth.throttle import AuthThrottle
from xmppd.session.events import SessionEvents

log = Logger(namespace="xmppd.c2s")

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
_STARTTLS = "<starttls xmlns='%s'/>" % NS_TLS
_STARTTLS_REQUIRED = "<starttls xmlns='%s'><required/></starttls>" % NS_TLS


class SessionManager(service.Service):
    """Config, router, store, the event registry and authentication (``auth``).

    Transports create sessions with :meth:`new_session`; ``sessions`` holds
    every live session (authenticated or not, attached or detached).
    """

    def __init__(self, cfg, router, store):
        self.cfg = cfg
        self.router = router
        self.store = store
        self.encryption_required = cfg.encryption_required
        self.events = SessionEvents()
        self.sessions = set()
        self.auth_throttle = AuthThrottle(cfg.max_auth_failures_per_account,
                                          cfg.max_auth_failures_per_ip,
                                          cfg.auth_failure_window)
        self.auth = AuthService(cfg, store.accounts, self.auth_throttle)
        self.registration = getattr(router, "registration", None)   # XEP-0077, when allowed
        self._features = {}   # (secure, STARTTLS offered, mechanisms offered) -> features str

    def new_session(self, transport):
        """A fresh (unauthenticated) session carried by ``transport``."""
        from xmppd.session.session import Session
        return Session(self, transport)

    def preauth_features(self, secure, can_starttls, tls_conn):
        """The stream features before authentication, as XML text (cached per variant)."""
        required = self.encryption_required
        starttls = not secure and can_starttls
        offer = None if (starttls and required) else self.auth.offer(tls_conn)
        key = (starttls, required, offer)
        xml = self._features.get(key)
        if xml is None:
            parts = []
            if starttls:
                parts.append(_STARTTLS_REQUIRED if required else _STARTTLS)
            if offer is not None:
                parts.append(self.auth.features(tls_conn))
                if self.registration is not None:
                    from xmppd.services.register import FEATURE
                    parts.append(FEATURE)
            xml = self._features[key] = "".join(parts)
        return xml

    def startService(self):
        super().startService()
        self.auth.start()
        if self.cfg.insecure_auth:
            log.warn("*" * 72)
            log.warn("INSECURE AUTH: any username/password logs in and accounts are created on "
                     "first login. Development only, never expose this server.")
            log.warn("*" * 72)

    def stopService(self):
        super().stopService()
        for s in list(self.sessions):
            s.close_with_error("system-shutdown")
        self.auth.stop()
