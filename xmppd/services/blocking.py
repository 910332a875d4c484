"""XEP-0191 Blocking Command: per-account blocklists, enforced in both directions.

Every non-empty blocklist lives in memory (``self.lists``: username -> set
of normalised JID strings), loaded once at start-up, so the check on the
delivery path is one dict lookup for the common account that blocks nobody.
Changes are written through the storage writer; the IQ result (and the push)
is sent only once the change is committed (§3.3: a client that got the
result may rely on the block surviving a restart).

Enforcement (XEP-0191 §3.3), on router events:

* ``account/*`` (a stanza *to* an account that blocks its sender): presence
  is dropped silently, messages bounce with ``service-unavailable``, IQ
  get/set bounce with ``service-unavailable``, IQ results/errors are dropped;
  so the user appears offline to the blocked entity.
* ``client/*`` (the account's own client sends *to* a blocked JID): messages
  and IQ get/set get ``not-acceptable`` with ``<blocked
  xmlns='urn:xmpp:blocking:errors'/>``; presence is dropped.

A blocked item matches like a privacy-list JID (XEP-0016 §2.1): the full
JID, the bare JID, the domain with the resource, or the domain alone.
Pushes (§3.3, §3.4) go to the user's resources that requested the list.
"""
import secrets

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.jid import InvalidJID, parse
from xmppd.router import error_reply, result_reply
from xmppd.storage.db import error_condition

NS = "urn:xmpp:blocking"
NS_ERRORS = "urn:xmpp:blocking:errors"

log = Logger(namespace="xmppd.blocking")


def matches(items, jid):
    """True if the JID string ``jid`` is covered by one of ``items`` (XEP-0016 §2.1 order)."""
    if jid in items:
        return True
    bare, slash, resource = jid.partition("/")
    if slash and bare in items:
        return True
    user, at, host = bare.rpartition("@")
    if not at:
        return False          # already a domain (or domain/resource): checked above
    if host in items:
        return True
    return bool(slash) and f"{host}/{resource}" in items


class Blocking:
    """The blocklists of all accounts, their IQ protocol and their enforcement."""

    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.store = store.blocklist
        self.lists = self.store.load_all() if self.store is not None else {}
        self.limit = cfg.max_blocklist_items

    def install(self):
        self.router.hooks.add("client/iq", self.on_client_iq, priority=100)
        self.router.hooks.add("user-deleted", self.on_user_deleted)
        self.router.server_features.append(NS)
        self._hooked = False
        # bound once: Hooks.remove compares the very function objects
        self._enforce = [(name, getattr(self, method)) for name, method in self._ENFORCE]
        self._sync_hooks()

    # The enforcement hooks cost every stanza an event (~2 µs): they are
    # registered only while at least one account blocks someone.
    _ENFORCE = (("client/message", "on_outgoing"), ("client/presence", "on_outgoing"),
                ("account/message", "on_incoming"), ("account/presence", "on_incoming"),
                ("account/iq", "on_incoming"))

    def _sync_hooks(self):
        want = bool(self.lists)
        if want == self._hooked:
            return
        hooks = self.router.hooks
        for name, fn in self._enforce:
            if want:
                # before other client/* handlers: carbons must not copy a refused message
                hooks.add(name, fn, priority=100)
            else:
                hooks.remove(name, fn)
        self._hooked = want

    def on_user_deleted(self, ev):
        """The rows went with the account (xmppd.services.accounts); so does the list."""
        if self.lists.pop(ev.username, None) is not None:
            self._sync_hooks()

    # -- enforcement ----------------------------------------------------------

    def is_blocked(self, username, jid):
        items = self.lists.get(username)
        return bool(items) and matches(items, jid)

    def on_incoming(self, ev):
        items = self.lists.get(ev.jid.user)
        if not items:
            return None
        el = ev.stanza
        frm = el.attributes.get("from")
        if not frm or not matches(items, frm):
            return None
        name = el.name
        if name == "message" or (name == "iq" and el.attributes.get("type") in ("get", "set")):
            self.router.bounce(el, "service-unavailable")
        return True     # presence and IQ results/errors: dropped without a word

    def on_outgoing(self, ev):
        session = ev.session
        items = self.lists.get(session.username)
        if not items:
            return None
        el = ev.stanza
        to = el.attributes.get("to")
        if not to:
            return None
        try:
            to = parse(to).full()
        except InvalidJID:
            return None     # the router answers jid-malformed
        if not matches(items, to):
            return None
        if el.name == "message" and el.attributes.get("type") != "error":
            reply = error_reply(el, "not-acceptable", sender=self.cfg.domain)
            reply.error.addElement((NS_ERRORS, "blocked"))
            session.deliver(reply)
        return True

    # -- the IQ protocol (§3.2-3.5) -------------------------------------------

    def on_client_iq(self, ev):
        el = ev.stanza
        child = None
        for c in el.elements():
            child = c
            break
        if child is None or child.uri != NS:
            return None
        session = ev.session
        to = el.attributes.get("to")
        if to and to != session.bare:
            return None         # someone else's account: the router refuses it
        t = el.attributes.get("type")
        name = child.name
        if t == "get" and name == "blocklist":
            session.blocklist_requested = True
            q = domish.Element((NS, "blocklist"))
            for j in sorted(self.lists.get(session.username, ())):
                q.addElement("item")["jid"] = j
            self._reply(session, el, q)
        elif t == "set" and name in ("block", "unblock"):
            self._change(session, el, child, name == "block")
        elif t in ("get", "set"):
            self._error(session, el, "bad-request")
        return True     # results/errors addressed to the server: nothing waits for them

    def _items(self, child):
        jids = []
        for item in child.elements():
            if item.name != "item" or item.uri != NS:
                continue
            try:
                jids.append(parse(item.getAttribute("jid") or "").full())
            except InvalidJID:
                raise ValueError("jid-malformed")
        return jids

    def _change(self, session, iq, child, block):
        username = session.username
        try:
            jids = self._items(child)
        except ValueError:
            self._error(session, iq, "jid-malformed")
            return
        current = self.lists.get(username, set())
        if block:
            if not jids:
                self._error(session, iq, "bad-request", "block needs at least one item")
                return
            new = set(jids) - current
            if len(current) + len(new) > self.limit:
                self._error(session, iq, "resource-constraint",
                            f"a blocklist holds at most {self.limit} JIDs")
                return
            self.lists[username] = current | new
            self._sync_hooks()
            d = self.store.add(username, new) if new else defer.succeed(None)
        else:
            gone = set(jids) & current if jids else None
            remaining = current - gone if jids else set()
            if remaining:
                self.lists[username] = remaining
            else:
                self.lists.pop(username, None)
            self._sync_hooks()
            d = self.store.remove(username, gone) if (gone or not jids) else defer.succeed(None)
        if block:
            self._unavailable_to(session.bare, jids)

        def committed(_):
            self._reply(session, iq, None)
            self._push(session.bare, child.name, jids)

        def failed(f):
            log.failure("blocking: storing the blocklist of {user} failed", f, user=username)
            try:
                restored = self.store.get(username)     # what is really committed
            except Exception:
                restored = current
            if restored:
                self.lists[username] = restored
            else:
                self.lists.pop(username, None)
            self._sync_hooks()
            self._error(session, iq, error_condition(f.value))

        d.addCallbacks(committed, failed)
        d.addErrback(lambda f: log.failure("blocking: answering a change failed", f))

    def _unavailable_to(self, bare, jids):
        """§3.3: a newly blocked entity that had our directed presence sees us leave."""
        blocked = set(jids)
        for s in list(self.router.sessions.resources(bare).values()):
            directed = getattr(s, "directed", None)
            if not directed:
                continue
            for key, to in list(directed.items()):
                if matches(blocked, to):
                    del directed[key]
                    p = domish.Element((None, "presence"))
                    p["from"] = s.full
                    p["to"] = to
                    p["type"] = "unavailable"
                    self.router.route(p)

    def _push(self, bare, name, jids):
        for s in list(self.router.sessions.resources(bare).values()):
            if not getattr(s, "blocklist_requested", False):
                continue
            iq = domish.Element((None, "iq"))
            iq["type"] = "set"
            iq["id"] = "block-push-" + secrets.token_hex(6)
            iq["to"] = s.full
            q = iq.addElement((NS, name))
            for j in jids:
                q.addElement("item")["jid"] = j
            s.deliver(iq)

    @staticmethod
    def _reply(session, iq, payload):
        reply = result_reply(iq, payload, sender=False)
        reply["to"] = session.full
        session.deliver(reply)

    @staticmethod
    def _error(session, iq, condition, text=None):
        reply = error_reply(iq, condition, text=text)
        reply.attributes.pop("from", None)
        reply["to"] = session.full
        session.deliver(reply)


def install(router, cfg, store):
    svc = Blocking(router, cfg, store)
    svc.install()
    router.blocking = svc
    return svc
