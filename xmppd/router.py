"""Who gets a stanza.

Data flows one way: transport -> session -> Router.route -> (local sessions |
a component such as the MUC service | the server's own services) -> session
-> transport. The router imports only from below it (:mod:`xmppd.wire`,
:mod:`xmppd.jid`, :mod:`xmppd.events`); ``error_reply``/``result_reply``/
``ERROR_TYPES`` are re-exported from :mod:`xmppd.wire.errors`.

CONTRACT (used by c2s, services and the MUC component; keep it stable):

* ``Router(config)``; ``router.domain`` (e.g. ``localhost``).
* ``router.route(element)``: deliver one stanza whose ``from`` is already
  trustworthy (stamped by c2s, or set by a component for its own domain).
  Looks at the ``to`` host: the local domain -> RFC 6121 §8.5 local delivery
  (sessions, or the server's own services for IQs to the server/bare JIDs);
  a component domain (``routes[host]``, e.g. ``conference.localhost``) ->
  ``routes[host].send(element)``; anything else -> an error back to the
  sender (remote-server-not-found), never for error stanzas.
* ``router.route_many(element, recipients)``: the fan-out fast path for the
  MUC. ``element`` is built once (its ``to`` is ignored); ``recipients`` is
  an iterable of full-JID strings. It is serialised once with a placeholder
  for ``to`` and each recipient gets head + escaped(to) + tail written to its
  session's transport. Recipients with no live session are treated like
  ``route`` of a copy would (for MUC traffic: dropped).
* ``router.addRoute(host, xs)`` / ``removeRoute(host, xs)``: wokkel's
  InternalComponent registers itself here.
* ``router.sessions``: the registry of bound c2s sessions (see
  :class:`SessionRegistry`).

Server-side IQ handlers (``xmppd.services``) register in
``router.iq_handlers[namespace] = fn(iq, child, target)``; ``target`` is
None for the server itself or the bare JID string of the account the IQ was
addressed to. ``fn`` returns the payload element (or None for an empty
result), or a Deferred firing with it (e.g. after a storage write), or
raises (or fails with) ``StanzaError`` (its ``appCondition``, e.g. XEP-0060's
pubsub#errors, goes into the error; any other failure is logged and answered
with ``xmppd.storage.db.error_condition`` of it). ``router.user_exists(localpart)`` is set
by the services to the account store's ``exists``.

Feature modules (``xmppd/services/*.py``) hook stanza events on
``router.hooks`` (:class:`xmppd.events.Hooks`, Prosody's stop rules: the
first handler returning non-None ends the chain) instead of editing the
routing code:

* ``client/message``, ``client/presence``, ``client/iq``:
  ``Event(stanza, session)``, a stanza a bound local client sent, after the
  session stamped ``from`` and before anything else happens to it (for
  presence: before the undirected/directed split). A handler may modify the
  stanza (e.g. add a vCard avatar hash) or return True when it consumed it
  (e.g. answered with an error itself).
* ``account/message``, ``account/presence``, ``account/iq``:
  ``Event(stanza, jid, session, wire)``, a stanza addressed to a local account
  (``jid`` is the parsed ``to``; ``session`` the target session for a full
  JID that is bound, else None), from anyone, before delivery. Return True
  when handled (e.g. blocked); add to the stanza to change what is delivered
  (e.g. a stanza-id). ``event.wire`` (None at first) may be set to the
  stanza serialised as it stands (bytes, as
  :func:`xmppd.wire.serialize.to_bytes` writes it) by a handler that
  serialised it anyway (the archive): delivery then writes those bytes
  instead of serialising again. A later handler that changes the stanza
  sets it back to None.
* ``message/delivered``: ``Event(stanza, jid, sessions, stored)``, after a
  message to a local account was written to ``sessions`` (a list; empty
  when it went to offline storage, then ``stored`` is True).

``router.server_features`` and ``router.account_features`` (lists of
namespaces) are what disco#info on the server and on an account's bare JID
advertise; a feature module appends what it serves (``router.account_identities``:
extra ``(category, type)`` identities of an account, e.g. PEP's pubsub/pep). ``router.server_items``
(list of ``(jid, name)``) feeds the server's disco#items.
``router.server_info_forms`` (list of functions returning a data form
element) adds XEP-0128 extended information to the server's disco#info.
``router.disco_nodes[node] = fn(iq, child, target)`` answers disco#info
and disco#items queries for ``node`` (e.g. the XEP-0050 command list);
``fn`` returns the payload or raises StanzaError, like an IQ handler.
"""
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import component

from xmppd.events import Event, Hooks
from xmppd.jid import InvalidJID, parse
from xmppd.wire import NS_CLIENT, NS_STANZAS  # noqa: F401  (re-exported)
from xmppd.wire.errors import ERROR_TYPES, error_reply, result_reply  # noqa: F401  (re-exported)
from xmppd.wire.serialize import patchable, to_bytes

log = Logger(namespace="xmppd.router")

SUBSCRIPTION_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))
ACCOUNT_EVENTS = {"message": "account/message", "presence": "account/presence",
                  "iq": "account/iq"}
CLIENT_EVENTS = {"message": "client/message", "presence": "client/presence",
                 "iq": "client/iq"}


class SessionRegistry:
    """Bound sessions keyed by string: full JID -> session, bare JID -> {resource: session}.

    A session (:class:`xmppd.session.Session`, whatever transport carries
    it) is any object with ``full``, ``bare``, ``resource``, ``available``,
    ``priority``, ``full_escaped`` (bytes), ``deliver(element)``,
    ``write_stanza(bytes)`` and ``write_patched(head, tail)``.
    """

    __slots__ = ("full", "bare")

    def __init__(self):
        self.full = {}
        self.bare = {}

    def add(self, session):
        """Register ``session``; return the session it replaces (same full JID) or None."""
        old = self.full.get(session.full)
        self.full[session.full] = session
        self.bare.setdefault(session.bare, {})[session.resource] = session
        return old

    def remove(self, session):
        """Unregister ``session`` if it is still the one registered under its JID."""
        if self.full.get(session.full) is not session:
            return False
        del self.full[session.full]
        resources = self.bare.get(session.bare)
        if resources is not None:
            resources.pop(session.resource, None)
            if not resources:
                del self.bare[session.bare]
        return True

    def get(self, full):
        return self.full.get(full)

    def resources(self, bare):
        return self.bare.get(bare) or {}

    def __len__(self):
        return len(self.full)


class Router(component.Router):
    """wokkel's Router with the routing rules of RFC 6121 §8.5 and no per-stanza logging."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.domain = cfg.domain
        self.sessions = SessionRegistry()
        self.iq_handlers = {}
        self.user_exists = lambda username: False
        self.offline = None  # xmppd.services.offline: store(el, jid, type) -> handled?
        self.trace = cfg.trace
        self.hooks = Hooks()
        self.server_features = []
        self.account_features = []
        self.account_identities = []   # (category, type) beside account/registered, e.g. pubsub/pep
        self.server_items = []
        self.server_info_forms = []
        self.disco_nodes = {}

    # -- entry points -------------------------------------------------------

    def route(self, el):
        to = el.attributes.get("to")
        if not to:
            # Only components reach here without 'to' (c2s resolves it first).
            log.warn("dropping stanza without 'to' from {frm}", frm=el.getAttribute("from"))
            return
        try:
            j = parse(to)
        except InvalidJID:
            self.bounce(el, "jid-malformed", sender=self.domain)
            return
        host = j.host
        if host == self.domain:
            if j.user is None:
                self._to_server(el, j)
            else:
                self._to_local_user(el, j)
            return
        dest = self.routes.get(host)
        if dest is not None:
            dest.send(el)
        else:
            self.bounce(el, "remote-server-not-found")

    def route_many(self, el, recipients):
        """Serialise ``el`` once and write it to each recipient's session (MUC fan-out)."""
        head, tail = patchable(el)
        full = self.sessions.full
        for r in recipients:
            s = full.get(r)
            if s is not None:
                s.write_patched(head, tail)

    def bounce(self, el, condition, etype=None, text=None, sender=None):
        """Answer ``el`` with a stanza error, unless it is itself an error or an IQ result."""
        t = el.attributes.get("type")
        if t == "error" or (t == "result" and el.name == "iq"):
            return
        if not el.attributes.get("from"):
            return
        self.route(error_reply(el, condition, etype, text, sender))

    # -- local domain -------------------------------------------------------

    def _to_server(self, el, j):
        name = el.name
        if name == "iq":
            t = el.attributes.get("type")
            if t == "get" or t == "set":
                self.handle_iq(el, None)
            # results/errors addressed to the server: nothing is waiting for them
        elif name == "message":
            t = el.attributes.get("type", "normal")
            if t in ("normal", "chat"):
                self.bounce(el, "service-unavailable")
        # presence to the server itself: nothing to do (no rosters, no probes)

    def from_client(self, el, session):
        """Fire ``client/<kind>`` for a stanza a local client sent; True if a hook consumed it."""
        hooks = self.hooks
        event = CLIENT_EVENTS.get(el.name)
        if event is None or not hooks.has(event):
            return False
        return bool(hooks.fire(event, Event(stanza=el, session=session)))

    def _to_local_user(self, el, j):
        name = el.name
        attrs = el.attributes
        hooks = self.hooks
        wire = None
        event = ACCOUNT_EVENTS.get(name)
        if j.resource is not None:
            s = self.sessions.full.get(j.full())
            t = attrs.get("type")
            if event is not None and hooks.has(event):
                ev = Event(stanza=el, jid=j, session=s, wire=None)
                if hooks.fire(event, ev):
                    return
                wire = ev.wire
            if s is not None:
                if name != "presence" or t != "probe":   # probes are the server's business
                    if wire is not None:
                        s.write_stanza(wire)
                    else:
                        s.deliver(el)
                    if name == "message" and hooks.has("message/delivered"):
                        hooks.fire("message/delivered",
                                   Event(stanza=el, jid=j, sessions=[s], stored=False))
                return
            if name == "message":
                if t is None or t == "normal" or t == "chat":
                    self._message_to_bare(el, j, t or "normal", wire)
                elif t == "groupchat":
                    self.bounce(el, "service-unavailable")
                elif t not in ("error", "headline"):
                    self._message_to_bare(el, j, "normal", wire)
            elif name == "iq":
                if t == "get" or t == "set":
                    self.bounce(el, "service-unavailable")
            elif name == "presence":
                if t in SUBSCRIPTION_TYPES:
                    self._presence_to_bare(el, j, t)
            return
        if event is not None and hooks.has(event):
            ev = Event(stanza=el, jid=j, session=None, wire=None)
            if hooks.fire(event, ev):
                return
            wire = ev.wire
        if name == "message":
            t = attrs.get("type", "normal")
            if t not in ("normal", "chat", "groupchat", "headline", "error"):
                t = "normal"
            self._message_to_bare(el, j, t, wire)
        elif name == "presence":
            self._presence_to_bare(el, j, attrs.get("type"))
        elif name == "iq":
            t = attrs.get("type")
            if t == "get" or t == "set":
                bare = j.userhost()
                if bare in self.sessions.bare or self.user_exists(j.user):
                    self.handle_iq(el, bare)
                else:
                    self.bounce(el, "service-unavailable")

    def _message_to_bare(self, el, j, t, wire=None):
        """RFC 6121 §8.5.2.1 delivery to a bare JID; ``wire``: ``el`` already serialised, if known."""
        if t == "error":
            return
        if t == "groupchat":
            self.bounce(el, "service-unavailable")
            return
        resources = self.sessions.bare.get(j.userhost())
        if resources:
            targets = [s for s in resources.values() if s.available and s.priority >= 0]
            if targets and t == "chat" and len(targets) > 1:
                top = max(s.priority for s in targets)
                targets = [s for s in targets if s.priority == top]
            if targets:
                if len(targets) == 1:
                    if wire is not None:
                        targets[0].write_stanza(wire)
                    else:
                        targets[0].deliver(el)
                else:
                    data = wire if wire is not None else to_bytes(el)
                    for s in targets:
                        s.write_stanza(data)
                if self.hooks.has("message/delivered"):
                    self.hooks.fire("message/delivered",
                                    Event(stanza=el, jid=j, sessions=targets, stored=False))
                return
        if t == "headline":
            return
        if self.offline is not None and self.offline.store(el, j, t):
            if self.hooks.has("message/delivered"):
                self.hooks.fire("message/delivered",
                                Event(stanza=el, jid=j, sessions=[], stored=True))
            return
        self.bounce(el, "service-unavailable")

    def _presence_to_bare(self, el, j, t):
        if t == "probe" or t == "error":
            return  # no roster, no subscriptions: nothing to answer a probe with
        resources = self.sessions.bare.get(j.userhost())
        if not resources:
            return  # unavailable or unknown user: presence is dropped silently
        targets = [s for s in resources.values() if s.available]
        if len(targets) == 1:
            targets[0].deliver(el)
        elif targets:
            data = to_bytes(el)
            for s in targets:
                s.write_stanza(data)

    # -- the server's own IQs -------------------------------------------------

    def handle_iq(self, iq, target, reply_from=True):
        """Answer a get/set IQ addressed to the server (target None) or an account (bare JID)."""
        child = None
        for c in iq.elements():
            if child is not None:
                child = False
                break
            child = c
        if not child:
            self._reply_error(iq, "bad-request", None, None, reply_from)
            return
        handler = self.iq_handlers.get(child.uri)
        if handler is None:
            self._reply_error(iq, "service-unavailable", None, None, reply_from)
            return
        try:
            payload = handler(iq, child, target)
        except StanzaError as e:
            self._reply_error(iq, e.condition, e.type, e.text, reply_from, e.appCondition)
            return
        except Exception:
            self._handler_failed(iq, child, handler, None, reply_from)
            return
        if isinstance(payload, Deferred):
            payload.addCallbacks(
                lambda p: self.route(result_reply(iq, p, reply_from)),
                lambda f: self._handler_failed(iq, child, handler, f, reply_from))
            payload.addErrback(lambda f: log.failure("answering an IQ failed", f))
            return
        self.route(result_reply(iq, payload, reply_from))

    def _handler_failed(self, iq, child, handler, failure, reply_from):
        e = failure.value if failure is not None else None
        if isinstance(e, StanzaError):
            self._reply_error(iq, e.condition, e.type, e.text, reply_from, e.appCondition)
            return
        log.failure("IQ handler {handler} failed on an IQ from {frm} ({ns})", failure,
                    handler=getattr(handler, "__qualname__", handler),
                    frm=iq.getAttribute("from"), ns=child.uri)
        condition = "internal-server-error"
        if e is not None:     # a storage failure: resource-constraint when the disk is full
            from xmppd.storage.db import error_condition
            condition = error_condition(e)
        self._reply_error(iq, condition, None, None, reply_from)

    def _reply_error(self, iq, condition, etype, text, reply_from, app=None):
        reply = error_reply(iq, condition, etype, text, app=app)
        if not reply_from:
            reply.attributes.pop("from", None)
        if reply.attributes.get("to"):
            self.route(reply)
