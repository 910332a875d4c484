"""Named session events: how a feature (SM, CSI, carbons...) hooks every session.

One :class:`SessionEvents` registry per server (``manager.events``),
shared by every session whatever its transport. A feature module registers
handlers once at startup and keeps its per-session state on the session
object (e.g. ``session.sm``)::

    def install(manager):
        manager.events.add("stream-features", _features)
        manager.events.add("nonza-received", _nonza, priority=10)

    def _features(session, features):
        if session.authenticated and not session.bound:
            features.append("<sm xmlns='urn:xmpp:sm:3'/>")

Handlers are called as ``fn(session, *args)`` in descending priority (ties:
registration order).  Content features (carbons, blocking, MAM...) hook the
router's stanza events instead (``client/<kind>``, ``account/<kind>``,
``message/delivered`` on ``router.hooks``, see :mod:`xmppd.router`); the
session events are for what concerns the client connection itself. For events that can be *handled*, the first handler
that returns something other than ``None`` stops the chain and that value
is returned by :meth:`fire` (the MUC hooks' rule, Prosody's too); the
others ignore return values.

Events (``args`` after ``session``)
-----------------------------------
``session-started``  ()  a new session for a new transport connection
                     (pre-auth); set per-session defaults here.
``stream-features``  (features: list of str)  the features of the stream
                     being opened; append XML text (no ``xmlns:stream``
                     needed). Which step: ``session.authenticated``,
                     ``session.bound``, ``session.transport.secure``.
``nonza-received``   (el)  a top-level element that is not a
                     ``jabber:client`` stanza and not one the core
                     negotiates (STARTTLS, SASL, bind): SM's ``<enable/>``,
                     ``<r/>``, ``<a/>``, ``<resume/>``, CSI's ``<active/>``...
                     In every state (check ``session.authenticated`` /
                     ``session.bound``). Return True when handled; unhandled
                     ones close the stream as before (``not-authorized`` or
                     ``unsupported-stanza-type``).
``stanza-received``  (el)  a ``message``/``presence``/``iq`` from the client
                     of a bound session, before it is stamped and routed.
                     Return True to consume it (it is then not routed).
``stanza-sending``   (data: bytes)  a serialised stanza about to be written
                     to the client (the hot path: keep it cheap). Return
                     True to hold/consume it (e.g. CSI); a holder later
                     writes it with ``session.send_raw(data)``, which skips
                     this event. Runs with ``session.transport`` None too,
                     while a session is detached (SM queues then).
``session-bound``    ()  a resource was bound and the bind result sent.
``transport-lost``   (reason: str)  the transport closed or died while the
                     session is bound: reason ``"closed"`` (the stream was
                     ended on purpose: a close or stream error from either
                     side; fired as our side closes, the session then ends
                     at once) or ``"lost"`` (the connection dropped). Return True to keep the session
                     alive detached (``session.transport`` is then None; SM
                     resumption later calls ``session.attach(transport)``,
                     and ``session.end()`` when it gives up).
``session-unbound``  ()  a bound session ended: it was removed from the
                     router and its unavailable presence was sent.
``session-hibernated`` (queue)  XEP-0198 keeps a session whose connection
                     dropped, waiting for resumption (fired by SM just
                     before the session is detached); ``queue`` holds the
                     unacked serialised stanzas (push notifications,
                     XEP-0357, start here).
``session-resumed``  ()  a hibernated session was resumed on a new stream.
"""
from xmppd.events import Hooks

EVENTS = ("session-started", "stream-features", "nonza-received", "stanza-received",
          "stanza-sending", "session-bound", "transport-lost", "session-unbound",
          "session-hibernated", "session-resumed")


class SessionEvents(Hooks):
    """:class:`xmppd.events.Hooks` (same ordering and stop rules) for session events.

    Two differences: only the names in :data:`EVENTS` are accepted (a typo
    fails at startup, not silently), and handlers get ``(session, *args)``
    rather than an ``Event`` bag, so the per-stanza events allocate nothing.
    """

    def __init__(self):
        super().__init__()
        # Hot-path views: tuples of plain functions, empty when nothing hooks them.
        self.stanza_received = ()
        self.stanza_sending = ()

    def add(self, name, fn, priority=0):
        if name not in EVENTS:
            raise KeyError(f"unknown session event {name!r} (known: {', '.join(EVENTS)})")
        super().add(name, fn, priority)
        self._refresh()

    def remove(self, name, fn):
        super().remove(name, fn)
        self._refresh()

    def _refresh(self):
        self.stanza_received = self.handlers("stanza-received")
        self.stanza_sending = self.handlers("stanza-sending")

    def handlers(self, name):
        return tuple(fn for _, _, fn in self._handlers.get(name, ()))

    def fire(self, name, session, *args):
        """Run the handlers of ``name``; return the first non-None result (or None)."""
        handlers = self._handlers.get(name)
        if not handlers:
            return None
        for _, _, fn in handlers:
            result = fn(session, *args)
            if result is not None:
                return result
        return None
