"""Client sessions, independent of the transport that carries them.

* :class:`xmppd.session.session.Session` -- one client: negotiation, the
  bound resource, presence, delivery.
* :class:`xmppd.session.manager.SessionManager` -- what all sessions share
  (config, router, store, the event registry, auth throttling, hashing).
* :mod:`xmppd.session.events` -- the named events features hook.
* :mod:`xmppd.session.negotiation`, :mod:`xmppd.session.sasl` -- the
  negotiation steps.

Transports (:mod:`xmppd.transports`) sit above this package; the router
below it.
"""
from xmppd.session.events import EVENTS, SessionEvents  # noqa: F401
from xmppd.session.manager import SessionManager  # noqa: F401
from xmppd.session.session import Session  # noqa: F401
