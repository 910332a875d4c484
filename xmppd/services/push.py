"""XEP-0357 Push Notifications: wake a client's device through its App Server.

Protocol (``urn:xmpp:push:0``, advertised on the account's bare JID, §4):

* ``<enable jid node>`` (§5), with an optional publish-options data form
  that is kept and sent back as ``<publish-options/>`` with every
  notification; ``<disable jid [node]/>`` (§6) removes one registration or
  every one for that App Server. Only the account itself may enable or
  disable (an IQ from anyone else, or to another account or the server, is
  ``forbidden``). Registrations are stored (table ``push_registrations``),
  survive restarts, go with the account, and are bounded
  (``push_max_registrations`` per account: enabling one more replaces the
  oldest, since a client cannot list what it registered in an earlier
  installation). Input is bounded too (node length, form size and fields).
* xmppd has no server-to-server links, so the App Server must be on this
  server: an external component (a ``[[components]]`` domain, or a JID at
  it) or a local account's full JID (IQs to a bare JID are answered by the
  server itself, RFC 6120 §10.3.3, so they would never reach the App
  Server). Any other JID is refused with ``remote-server-not-found``.

When a notification is sent (§7; the choices the XEP leaves are Prosody's
mod_cloud_notify ones): for a chat or normal message with a body (or an
encrypted payload) to the account,

* stored offline (router ``message/delivered`` with ``stored``): every
  registration of the account;
* delivered while the account has no live session (none connected and
  available, none that got the message), only sessions that XEP-0198 keeps
  for resumption: every registration that none of those sessions enabled
  itself;
* queued for a hibernated session (a session-event ``stanza-sending``
  handler, registered only while such a session waits): the registrations
  that session enabled, once per hibernation (on ``session-hibernated``
  already, if its unacked queue holds such a message) until it resumes.

The notification is ``<pubsub><publish node><item><notification>`` with a
``urn:xmpp:push:summary`` form (message-count since the account's last
login, last-message-sender as a bare JID if ``push_include_sender``,
last-message-body, cut to 256 characters, only if ``push_include_body``:
off by default, the App Server and the phone vendor's push service would
read every message), sent from the account's bare JID. A registration gets
at most one notification every ``push_min_interval`` seconds (later ones are
coalesced into one sent when the interval ends). An App Server answering
with an error of type cancel or auth (item-not-found, not-authorized,
forbidden...) has the registration removed (§7); ``service-unavailable`` and
``remote-server-*`` are what this server itself answers while a component
is disconnected, so they are not taken as a refusal, and nothing is sent to
an App Server that is not connected.

Cost: the router hooks (``message/delivered``, ``account/iq`` for the App
Servers' answers) are registered only while at least one registration
exists, and then cost one dict lookup per message to an account without one.
"""
import collections
import json
import secrets
import time

from twisted.internet import reactor
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xmppd.jid import InvalidJID, parse

NS = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"
NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SUMMARY = "urn:xmpp:push:summary"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"

# Encrypted payloads count as content: their <body/> is only a fallback, or missing.
ENCRYPTED = frozenset(("eu.siacs.conversations.axolotl", "urn:xmpp:omemo:2", "urn:xmpp:openpgp:0",
                       "jabber:x:encrypted"))
_ENCRYPTED_B = tuple(f"xmlns='{ns}'".encode() for ns in ENCRYPTED)

MAX_NODE = 1024            # characters of a node name
MAX_JID = 3071             # RFC 7622 §3.1
MAX_FIELDS = 16            # publish-options fields kept
MAX_VALUES = 8             # values per field
MAX_OPTIONS_SIZE = 4096    # characters of the kept form (JSON)
MAX_BODY = 256             # characters of last-message-body
MAX_PENDING = 10000        # notifications awaiting the App Server's answer
PENDING_TIMEOUT = 120.0    # seconds an answer is waited for
# What this server answers itself when the App Server cannot be reached: not a refusal.
TRANSIENT = frozenset(("service-unavailable", "remote-server-not-found",
                       "remote-server-timeout", "internal-server-error"))

log = Logger(namespace="xmppd.push")


def _error(condition, etype, text=None):
    return StanzaError(condition, type=etype, text=text)


def important(el):
    """True for a message that wakes the device: chat/normal with a body or encrypted payload."""
    t = el.attributes.get("type")
    if t is not None and t != "chat" and t != "normal":
        return False           # groupchat (a busy room), headline, error
    for child in el.elements():
        if child.name == "body" and child.uri in (None, NS_CLIENT):
            return True
        if child.uri in ENCRYPTED:
            return True
    return False


def important_bytes(data):
    """:func:`important` on a serialised stanza written to a session (no carbons, no MAM results)."""
    if not data.startswith(b"<message"):
        return False
    tag = data[:data.find(b">")]
    if b"type='groupchat'" in tag or b"type='error'" in tag or b"type='headline'" in tag:
        return False
    if b"<sent xmlns='urn:xmpp:carbons:2'" in data or \
            b"<received xmlns='urn:xmpp:carbons:2'" in data or \
            b"<result xmlns='urn:xmpp:mam:2'" in data:
        return False
    return b"<body" in data or any(ns in data for ns in _ENCRYPTED_B)


def parse_options(x):
    """The enable request's publish-options form as JSON ``[[var, [values]], ...]`` (§5)."""
    if x.getAttribute("type") != "submit":
        raise _error("bad-request", "modify", "publish-options must be a form of type submit")
    fields = []
    seen = set()
    for f in x.elements():
        if f.uri != NS_DATA or f.name != "field":
            continue
        var = f.getAttribute("var")
        if not var or len(var) > 256:
            raise _error("bad-request", "modify", "every field needs a var")
        values = [str(v) for v in f.elements() if v.name == "value" and v.uri == NS_DATA]
        if len(values) > MAX_VALUES:
            raise _error("not-acceptable", "modify", f"at most {MAX_VALUES} values per field")
        if var == "FORM_TYPE":
            if values != [PUBLISH_OPTIONS]:
                raise _error("bad-request", "modify", f"FORM_TYPE must be {PUBLISH_OPTIONS}")
            continue
        if var in seen:
            raise _error("bad-request", "modify", f"field {var} appears twice")
        seen.add(var)
        fields.append([var, values])
        if len(fields) > MAX_FIELDS:
            raise _error("not-acceptable", "modify", f"at most {MAX_FIELDS} publish-options fields")
    text = json.dumps(fields, ensure_ascii=False)
    if len(text) > MAX_OPTIONS_SIZE:
        raise _error("not-acceptable", "modify",
                     f"publish-options larger than {MAX_OPTIONS_SIZE} characters")
    return text


def _add_field(x, var, value, ftype=None):
    f = x.addElement("field")
    f["var"] = var
    if ftype:
        f["type"] = ftype
    f.addElement("value", content=value)


class Registration:
    """One App Server node of one account; ``last``/``timer`` rate-limit it (in memory)."""

    __slots__ = ("jid", "node", "options", "created", "last", "timer")

    def __init__(self, jid, node, options, created):
        self.jid, self.node, self.options, self.created = jid, node, options, created
        self.last = 0.0
        self.timer = None

    @property
    def key(self):
        return (self.jid, self.node)

    def cancel(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class Push:
    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.domain = cfg.domain
        self.store = store.push
        self.regs = {}            # username -> {(jid, node): Registration}
        self.summary = {}         # username -> [count, sender, body] since the last login
        self.waiting = {}         # hibernated session -> True, until its one notification
        self.pending = collections.OrderedDict()   # iq id -> (username, key, jid, deadline)
        self.manager = None
        if self.store is not None:
            for username, rows in self.store.load_all().items():
                self.regs[username] = {(j, n): Registration(j, n, o, c) for j, n, o, c in rows}

    def install(self):
        self.router.iq_handlers[NS] = self.on_iq
        self.router.account_features.append(NS)
        self.router.hooks.add("user-deleted", self.on_user_deleted)
        self._hooked = False
        self._hooks = (("message/delivered", self.on_delivered, 0),
                       ("account/iq", self.on_account_iq, 50))
        self._sending_hooked = False
        self._sync_hooks()

    def install_sessions(self, manager):
        """Session events: XEP-0198 hibernation and logins (called once the manager exists)."""
        self.manager = manager
        ev = manager.events
        ev.add("session-hibernated", self.on_hibernated)
        ev.add("session-resumed", self.on_resumed)
        ev.add("session-bound", self.on_bound)
        ev.add("session-unbound", self.on_unbound)

    # -- hooks only while needed -------------------------------------------------

    def _sync_hooks(self):
        want = bool(self.regs)
        if want == self._hooked:
            return
        hooks = self.router.hooks
        for name, fn, prio in self._hooks:
            if want:
                hooks.add(name, fn, priority=prio)
            else:
                hooks.remove(name, fn)
        self._hooked = want

    def _sync_sending(self):
        """The ``stanza-sending`` handler runs only while a hibernated session awaits its push."""
        want = bool(self.waiting) and self.manager is not None
        if want == self._sending_hooked:
            return
        if want:
            self.manager.events.add("stanza-sending", self.on_sending, priority=50)
        else:
            self.manager.events.remove("stanza-sending", self.on_sending)
        self._sending_hooked = want

    # -- enable / disable (§5, §6) ---------------------------------------------------

    def on_iq(self, iq, child, target):
        if iq.getAttribute("type") != "set":
            raise _error("bad-request", "modify")
        session = self.router.sessions.full.get(iq.getAttribute("from") or "")
        if session is None or target != session.bare:
            raise _error("forbidden", "auth", "only the account itself enables push notifications")
        if child.name == "enable":
            return self._enable(session, child)
        if child.name == "disable":
            return self._disable(session, child)
        raise _error("bad-request", "modify")

    def _app_server(self, value):
        """The App Server JID normalised, or StanzaError if it cannot be reached from here."""
        if not value or len(value) > MAX_JID:
            raise _error("bad-request", "modify", "jid is required")
        try:
            j = parse(value)
        except InvalidJID:
            raise _error("jid-malformed", "modify")
        host = j.host
        if host == self.domain:
            if j.user is None or j.resource is None:
                raise _error("not-acceptable", "modify",
                             "a local App Server account is addressed by its full JID")
        elif host not in self._component_domains():
            if host in self.router.routes:
                raise _error("not-acceptable", "cancel", f"{host} is not a push App Server")
            raise _error("remote-server-not-found", "cancel",
                         "this server has no server-to-server links: the App Server must be "
                         "one of its components or a local account")
        return j.full()

    def _component_domains(self):
        return {c["domain"] for c in self.cfg.components}

    def _enable(self, session, child):
        limit = self.cfg.push_max_registrations
        if limit <= 0:
            raise _error("not-allowed", "cancel", "push notifications are off on this server")
        jid = self._app_server(child.getAttribute("jid"))
        node = child.getAttribute("node")
        if not node:
            raise _error("bad-request", "modify", "node is required")
        if len(node) > MAX_NODE:
            raise _error("not-acceptable", "modify", f"node longer than {MAX_NODE} characters")
        forms = [c for c in child.elements() if c.uri == NS_DATA and c.name == "x"]
        if len(forms) > 1:
            raise _error("bad-request", "modify", "one publish-options form at most")
        options = parse_options(forms[0]) if forms else "[]"
        username = session.username
        regs = self.regs.setdefault(username, {})
        key = (jid, node)
        before = dict(regs)
        old = regs.pop(key, None)
        if old is not None:
            old.cancel()
        evict = sorted(regs.values(), key=lambda r: r.created)[:max(0, len(regs) - limit + 1)]
        for r in evict:
            r.cancel()
            del regs[r.key]
        created = time.time()
        regs[key] = Registration(jid, node, options, created)
        if getattr(session, "push_keys", None) is None:
            session.push_keys = set()
        session.push_keys.add(key)
        self._sync_hooks()
        d = self.store.put(username, jid, node, options, created, [r.key for r in evict])

        def stored(_):
            log.info("push: {user} enabled notifications to {jid}{evicted}", user=username,
                     jid=jid, evicted=f" (replacing {len(evict)} older)" if evict else "")
            return None

        def failed(f):
            log.failure("push: storing a registration of {user} failed", f, user=username)
            try:
                rows = self.store.get(username)        # what is really committed
            except Exception:
                rows = [(r.jid, r.node, r.options, r.created) for r in before.values()]
            self._load(username, rows)
            return f
        return d.addCallbacks(stored, failed)

    def _load(self, username, rows):
        for r in self.regs.pop(username, {}).values():
            r.cancel()
        if rows:
            self.regs[username] = {(j, n): Registration(j, n, o, c) for j, n, o, c in rows}
        else:
            self._forget_keys(username, ())
        self._sync_hooks()

    def _disable(self, session, child):
        jid = self._normalised(child.getAttribute("jid"))
        node = child.getAttribute("node") or None
        username = session.username
        regs = self.regs.get(username, {})
        gone = [k for k in regs if k[0] == jid and (node is None or k[1] == node)]
        if not gone:
            return None                   # nothing registered: done already
        for k in gone:
            regs.pop(k).cancel()
        self._forget_keys(username, gone)
        log.info("push: {user} disabled {n} registration(s) at {jid}", user=username, n=len(gone),
                 jid=jid)
        return self.store.remove(username, jid, node).addCallback(lambda _: None)

    @staticmethod
    def _normalised(value):
        if not value or len(value) > MAX_JID:
            raise _error("bad-request", "modify", "jid is required")
        try:
            return parse(value).full()
        except InvalidJID:
            raise _error("jid-malformed", "modify")

    def _forget_keys(self, username, keys):
        regs = self.regs.get(username)
        if regs is not None and not regs:
            del self.regs[username]
            self.summary.pop(username, None)
        for s in self.router.sessions.resources(f"{username}@{self.domain}").values():
            own = getattr(s, "push_keys", None)
            if own:
                own.difference_update(keys)
        self._sync_hooks()

    def on_user_deleted(self, ev):
        regs = self.regs.pop(ev.username, None)
        self.summary.pop(ev.username, None)
        if regs:
            for r in regs.values():
                r.cancel()
            self._sync_hooks()

    # -- when to notify ---------------------------------------------------------------

    def on_delivered(self, ev):
        """A message to an account: offline, or only hibernated sessions got it."""
        username = ev.jid.user
        regs = self.regs.get(username)
        if regs is None:
            return None
        el = ev.stanza
        if not important(el):
            return None
        if ev.stored:
            targets = list(regs.values())
        else:
            owned = set()
            for s in self.router.sessions.resources(ev.jid.userhost()).values():
                if s.transport is not None and (s.available or s in ev.sessions):
                    return None           # someone is online: no need to wake a device
                owned |= getattr(s, "push_keys", None) or set()
            targets = [r for k, r in regs.items() if k not in owned]
        self._count(username, el)
        if targets:
            self._notify(username, targets)
        return None

    def _count(self, username, el, n=1):
        s = self.summary.setdefault(username, [0, None, None])
        s[0] += n
        frm = el.attributes.get("from")
        s[1] = frm.split("/", 1)[0] if frm else None
        body = None
        for child in el.elements():
            if child.name == "body" and child.uri in (None, NS_CLIENT):
                body = str(child)[:MAX_BODY]
                break
        s[2] = body

    def on_hibernated(self, session, queue):
        """XEP-0198 keeps ``session`` for resumption: notify now, or at its next message."""
        try:
            keys = getattr(session, "push_keys", None)
            if not keys or not self.regs.get(session.username):
                return None
            unacked = [d for d in queue if important_bytes(d)]
            if unacked:
                from xmppd.wire.serialize import parse_stanza
                self._count(session.username, parse_stanza(unacked[-1].decode("utf-8")),
                            len(unacked))
                self._notify_owned(session, hibernated=False)
            else:
                self.waiting[session] = True
                self._sync_sending()
        except Exception:
            log.failure("push: handling the hibernation of {jid} failed", jid=session.full)
        return None

    def on_sending(self, session, data):
        if session not in self.waiting:
            return None
        if session.transport is not None:          # resumed meanwhile
            self._stop_waiting(session)
        elif important_bytes(data):
            self._stop_waiting(session)            # one notification per hibernation
            # after the router's message/delivered has counted this message
            reactor.callLater(0, self._notify_owned, session)
        return None

    def _stop_waiting(self, session):
        if self.waiting.pop(session, None) is not None:
            self._sync_sending()

    def _notify_owned(self, session, hibernated=True):
        if hibernated and (session.ended or session.transport is not None):
            return
        regs = self.regs.get(session.username)
        keys = getattr(session, "push_keys", None)
        if regs and keys:
            targets = [regs[k] for k in keys if k in regs]
            if targets:
                self._notify(session.username, targets)

    def on_resumed(self, session):
        self._stop_waiting(session)
        self.summary.pop(session.username, None)

    def on_bound(self, session):
        self.summary.pop(session.username, None)

    def on_unbound(self, session):
        self._stop_waiting(session)

    # -- sending (§7) ------------------------------------------------------------------

    def _notify(self, username, targets):
        interval = self.cfg.push_min_interval
        now = time.monotonic()
        for reg in targets:
            if reg.timer is not None:
                continue                  # a coalesced notification is due: it will say more
            wait = reg.last + interval - now if reg.last else 0
            if wait > 0:
                reg.timer = reactor.callLater(wait, self._due, username, reg)
            else:
                self._send(username, reg, now)

    def _due(self, username, reg):
        reg.timer = None
        if self.regs.get(username, {}).get(reg.key) is reg:
            self._send(username, reg, time.monotonic())

    def _reachable(self, jid):
        host = jid.split("/", 1)[0].rpartition("@")[2]
        if host == self.domain:
            return jid in self.router.sessions.full
        return host in getattr(self.router, "components", ())

    def _send(self, username, reg, now):
        try:
            if not self._reachable(reg.jid):
                log.info("push: App Server {jid} is not connected; {user} not notified",
                         jid=reg.jid, user=username)
                return
            reg.last = now
            iq = self._publish(username, reg)
            self._expect(iq["id"], (username, reg.key, reg.jid, now + PENDING_TIMEOUT), now)
            self.router.route(iq)
        except Exception:
            log.failure("push: notifying {jid} for {user} failed", jid=reg.jid, user=username)

    def _publish(self, username, reg):
        count, sender, body = self.summary.get(username) or (0, None, None)
        iq = domish.Element((None, "iq"))
        iq["type"] = "set"
        iq["from"] = f"{username}@{self.domain}"
        iq["to"] = reg.jid
        iq["id"] = "push-" + secrets.token_hex(8)
        pubsub = iq.addElement((NS_PUBSUB, "pubsub"))
        publish = pubsub.addElement("publish")
        publish["node"] = reg.node
        x = publish.addElement("item").addElement((NS, "notification")).addElement((NS_DATA, "x"))
        x["type"] = "submit"
        _add_field(x, "FORM_TYPE", SUMMARY, "hidden")
        _add_field(x, "message-count", str(max(count, 1)))
        if sender and self.cfg.push_include_sender:
            _add_field(x, "last-message-sender", sender)
        if body and self.cfg.push_include_body:
            _add_field(x, "last-message-body", body)
        fields = json.loads(reg.options)
        if fields:
            form = pubsub.addElement("publish-options").addElement((NS_DATA, "x"))
            form["type"] = "submit"
            _add_field(form, "FORM_TYPE", PUBLISH_OPTIONS, "hidden")
            for var, values in fields:
                f = form.addElement("field")
                f["var"] = var
                for v in values:
                    f.addElement("value", content=v)
        return iq

    def _expect(self, iq_id, entry, now):
        pending = self.pending
        while pending:
            oldest = next(iter(pending.values()))
            if oldest[3] > now and len(pending) < MAX_PENDING:
                break
            pending.popitem(last=False)
        pending[iq_id] = entry

    def on_account_iq(self, ev):
        """The App Server's answer to a notification (addressed to the account's bare JID)."""
        el = ev.stanza
        attrs = el.attributes
        t = attrs.get("type")
        if (t != "result" and t != "error") or ev.jid.resource is not None:
            return None
        iq_id = attrs.get("id")
        entry = self.pending.get(iq_id)
        if entry is None:
            return None
        username, key, jid, _ = entry
        try:
            frm = parse(attrs.get("from") or "").full()
        except InvalidJID:
            return None
        if ev.jid.user != username or frm != jid:
            return None               # not from the App Server we asked
        del self.pending[iq_id]
        if t == "error":
            self._refused(username, key, el)
        return True

    def _refused(self, username, key, el):
        etype = condition = None
        for child in el.elements():
            if child.name == "error":
                etype = child.getAttribute("type")
                for c in child.elements():
                    if c.uri == NS_STANZAS and c.name != "text":
                        condition = c.name
                        break
                break
        if etype not in ("cancel", "auth") or condition in TRANSIENT:
            log.info("push: App Server {jid} answered {cond} ({etype}) for {user}; kept",
                     jid=key[0], cond=condition, etype=etype, user=username)
            return
        regs = self.regs.get(username)
        reg = regs.pop(key, None) if regs else None
        if reg is None:
            return
        reg.cancel()
        self._forget_keys(username, [key])
        log.info("push: App Server {jid} refused a notification for {user} ({cond}); "
                 "registration removed", jid=key[0], user=username, cond=condition)
        d = self.store.remove(username, key[0], key[1])
        d.addErrback(lambda f: log.failure("push: removing a refused registration of {user} "
                                           "failed", f, user=username))


def install(router, cfg, store):
    svc = Push(router, cfg, store)
    svc.install()
    router.push = svc
    return svc
