"""Personal Eventing Protocol (XEP-0163): a PubSub service on every account's bare JID.

The owner publishes (nodes are created on first publish, XEP-0163 §3 with
the defaults of :func:`xmppd.pubsub.default_config`); anyone may read or
subscribe to a node whose access model admits them (open nodes for
everyone, the others for the owner only: see :mod:`xmppd.pubsub`).

Who gets a notification (XEP-0163 §4.3, XEP-0060 §7.1.2.1): the owner's
available resources whose entity capabilities (XEP-0115, see
:mod:`xmppd.pubsub.caps`) say ``<node>+notify``, and the explicit
subscribers the node's access model still admits. There is no roster, so
no contact gets notifications by presence subscription (XEP-0163 §4.3.1
notes the server may also use explicit subscriptions). The last item of a
node is sent (``send_last_published_item``, XEP-0163 §4.3.4):
to a resource whose caps start saying ``+notify`` for a node of its own
account, and to a subscriber when it subscribes and when it sends initial
presence.

Supported (XEP-0060): publish with auto-create and publish-options
(§7.1.5), retract (§7.2), items get (all, by id, ``max_items``, §6.5),
subscribe and unsubscribe (§6.1, §6.2), subscriptions and affiliations
(§5.6, §5.7), create (§8.1), configure (§8.2), default options (§8.3),
delete (§8.4), purge (§8.5). Not supported: subscription options,
collections, pending subscriptions, affiliation and subscription
management by the owner, RSM on items.

Other modules (avatars, bookmarks) use :meth:`PEP.publish_item`,
:meth:`PEP.retract_item`, :meth:`PEP.get_items` and ``PEP.listeners``
(``fn(username, node, kind, item_id, payload)`` called after a change is
committed; ``kind`` is publish, retract, purge or delete). A node whose
content lives elsewhere (XEP-0048's legacy ``storage:bookmarks``) is served
by an object in ``PEP.virtual_nodes[node]`` with ``get(username)`` (Deferred
[(id, publisher, payload xml)]) and ``publish(username, payload)``; only the
owner may use it.
"""
import secrets
import uuid
import weakref

from twisted.internet import defer, reactor
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xmppd import pubsub
from xmppd.pubsub import (NS_PUBLISH_OPTIONS, NS_NODE_CONFIG, NS_PUBSUB, NS_PUBSUB_EVENT,
                          NS_PUBSUB_OWNER, check_id, error, may_read)
from xmppd.pubsub.caps import NS_DISCO_INFO, CapsCache, caps_of, notify_nodes, verify
from xmppd.storage.personal import LimitExceeded

log = Logger(namespace="xmppd.pep")

CAPS_QUERY_TIMEOUT = 30
MAX_PENDING_CAPS = 1000       # outstanding disco#info queries (bounded memory)
MAX_WAITING_PER_VER = 100

# config-node-max: max_items='max' is accepted. Gajim stores XEP-0402 bookmarks only
# when it sees this (with bookmarks:1#compat-pep); otherwise it uses private storage.
FEATURES = [NS_PUBSUB] + [f"{NS_PUBSUB}#{f}" for f in (
    "access-open", "access-presence", "access-roster", "access-whitelist", "auto-create",
    "config-node", "config-node-max", "create-and-configure", "create-nodes", "delete-items", "delete-nodes",
    "filtered-notifications", "item-ids", "last-published", "multi-items", "persistent-items",
    "publish", "publish-options", "purge-nodes", "retract-items", "retrieve-affiliations",
    "retrieve-default", "retrieve-items", "retrieve-subscriptions", "subscribe")]


def _bare(jid):
    return jid.split("/", 1)[0]


class PEP:
    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.store = store          # AsyncPersonalStore
        self.domain = cfg.domain
        self.caps = CapsCache(cfg.caps_cache_size)
        self.interest = weakref.WeakKeyDictionary()   # session -> frozenset of +notify nodes
        self.pending = {}            # disco#info iq id -> (full jid, hash, ver)
        self.waiting = {}            # (hash, ver) -> [weakref(session)]
        self.listeners = []
        self.virtual_nodes = {}      # node -> handler with get(username) and publish(username, payload)

    def install(self):
        r = self.router
        r.iq_handlers[NS_PUBSUB] = self.iq_pubsub
        r.iq_handlers[NS_PUBSUB_OWNER] = self.iq_owner
        r.account_features.extend(FEATURES)
        r.server_features.extend(FEATURES)    # XEP-0163 §6.1: the server advertises PEP
        r.account_identities.append(("pubsub", "pep"))
        r.hooks.add("client/presence", self.on_presence)
        r.hooks.add("client/iq", self.on_client_iq)
        return self

    # -- the protocol ----------------------------------------------------------

    def iq_pubsub(self, iq, child, target):
        if target is None:
            raise StanzaError("service-unavailable", type="cancel")  # no pubsub service on the domain
        t = iq.getAttribute("type")
        requester = iq.getAttribute("from") or ""
        ops = [c for c in child.elements() if c.uri == NS_PUBSUB]
        main = [c for c in ops if c.name not in ("publish-options", "configure")]
        if len(main) != 1 or len(ops) != len(list(child.elements())):
            raise error("bad-request", text="one pubsub action per request")
        op = main[0]
        handler = {("set", "publish"): self._publish, ("set", "retract"): self._retract,
                   ("get", "items"): self._items, ("set", "subscribe"): self._subscribe,
                   ("set", "unsubscribe"): self._unsubscribe,
                   ("get", "subscriptions"): self._subscriptions,
                   ("get", "affiliations"): self._affiliations,
                   ("set", "create"): self._create}.get((t, op.name))
        if handler is None:
            if op.name in ("publish", "retract", "items", "subscribe", "unsubscribe",
                           "subscriptions", "affiliations", "create"):
                raise error("bad-request", text=f"{op.name} needs type {'get' if op.name in ('items', 'subscriptions', 'affiliations') else 'set'}")
            if op.name == "options":
                raise error("feature-not-implemented", "unsupported",
                            feature="subscription-options")
            raise error("feature-not-implemented", "unsupported", feature=op.name)
        return handler(op, child, target, requester)

    def iq_owner(self, iq, child, target):
        if target is None:
            raise StanzaError("service-unavailable", type="cancel")
        t = iq.getAttribute("type")
        requester = iq.getAttribute("from") or ""
        ops = list(child.elements())
        if len(ops) != 1 or ops[0].uri != NS_PUBSUB_OWNER:
            raise error("bad-request", text="one pubsub#owner action per request")
        op = ops[0]
        handler = {("get", "configure"): self._configure_get,
                   ("set", "configure"): self._configure_set,
                   ("get", "default"): self._default,
                   ("set", "delete"): self._delete, ("set", "purge"): self._purge}.get((t, op.name))
        if handler is None:
            if op.name in ("configure", "default", "delete", "purge"):
                raise error("bad-request", text=f"wrong type for {op.name}")
            raise error("feature-not-implemented", "unsupported", feature=op.name)
        if _bare(requester) != target:
            raise error("forbidden", etype="auth")
        return handler(op, target, requester)

    # pubsub#owner ------------------------------------------------------------

    def _configure_get(self, op, owner, requester):
        node = check_id(op.getAttribute("node"), "node")
        d = self.store.node_config(owner.split("@", 1)[0], node)

        def got(config):
            if config is None:
                raise error("item-not-found")
            ps = domish.Element((NS_PUBSUB_OWNER, "pubsub"))
            c = ps.addElement("configure")
            c["node"] = node
            c.addChild(pubsub.config_form(config, self.cfg))
            return ps
        return d.addCallback(got)

    def _configure_set(self, op, owner, requester):
        node = check_id(op.getAttribute("node"), "node")
        user = owner.split("@", 1)[0]
        for x in op.elements():
            if x.name == "x" and x.getAttribute("type") == "cancel":
                return None
        changes = pubsub.parse_form(op, NS_NODE_CONFIG, self.cfg, ignore_unknown=True)
        d = self.store.node_config(user, node)

        def got(config):
            if config is None:
                raise error("item-not-found")
            config.update(changes)
            return self.store.configure(user, node, config)

        def done(ok):
            if not ok:
                raise error("item-not-found")
            return None
        return d.addCallback(got).addCallback(done)

    def _default(self, op, owner, requester):
        ps = domish.Element((NS_PUBSUB_OWNER, "pubsub"))
        ps.addElement("default").addChild(pubsub.config_form(pubsub.default_config(self.cfg), self.cfg))
        return ps

    def _delete(self, op, owner, requester):
        node = check_id(op.getAttribute("node"), "node")
        user = owner.split("@", 1)[0]
        return self.delete_node(user, node).addCallback(lambda _: None)

    def _purge(self, op, owner, requester):
        node = check_id(op.getAttribute("node"), "node")
        user = owner.split("@", 1)[0]
        d = self.store.node_config(user, node)

        def got(config):
            if config is None:
                raise error("item-not-found")
            d2 = self.store.purge(user, node)
            d2.addCallback(lambda _: self.store.subscribers(user, node))
            return d2.addCallback(lambda subs: (config, subs))

        def done(result):
            config, subs = result
            self._event(owner, node, config, self._simple_event("purge", node), subs)
            self._changed(user, node, "purge", None, None)
        return d.addCallback(got).addCallback(done)

    # pubsub ---------------------------------------------------------------------

    def _publish(self, op, ps, owner, requester):
        if _bare(requester) != owner:
            raise error("forbidden", etype="auth")
        node = check_id(op.getAttribute("node"), "node")
        items = [c for c in op.elements()]
        if not items:
            raise error("bad-request", "item-required")
        if len(items) > 1 or items[0].name != "item" or items[0].uri != NS_PUBSUB:
            raise error("bad-request", "invalid-payload")
        payloads = list(items[0].elements())
        if not payloads:
            raise error("bad-request", "payload-required")
        if len(payloads) > 1:
            raise error("bad-request", "invalid-payload")
        item_id = items[0].getAttribute("id")
        if item_id is None:
            item_id = uuid.uuid4().hex
        check_id(item_id, "item")
        preconditions = {}
        for c in ps.elements():
            if c.name == "publish-options":
                try:
                    preconditions = pubsub.parse_form(c, NS_PUBLISH_OPTIONS, self.cfg)
                except KeyError as e:
                    raise error("conflict", "precondition-not-met",
                                text=f"unsupported publish option {e.args[0]}")
        user = owner.split("@", 1)[0]
        virtual = self.virtual_nodes.get(node)
        if virtual is not None:     # e.g. legacy bookmarks, kept in another node (xmppd.services.bookmarks)
            d = virtual.publish(user, payloads[0])
        else:
            d = self.publish_item(user, node, item_id, payloads[0], preconditions, _bare(requester),
                                  check=True)

        def done(_):
            res = domish.Element((NS_PUBSUB, "pubsub"))
            pub = res.addElement("publish")
            pub["node"] = node
            pub.addElement("item")["id"] = item_id
            return res
        return d.addCallback(done)

    def _retract(self, op, ps, owner, requester):
        if _bare(requester) != owner:
            raise error("forbidden", etype="auth")
        node = check_id(op.getAttribute("node"), "node")
        items = list(op.elements())
        if len(items) != 1 or items[0].name != "item":
            raise error("bad-request", "item-required")
        item_id = check_id(items[0].getAttribute("id"), "item")
        notify = op.getAttribute("notify") in ("1", "true")
        return self.retract_item(owner.split("@", 1)[0], node, item_id, notify).addCallback(
            lambda _: None)

    def _items(self, op, ps, owner, requester):
        node = check_id(op.getAttribute("node"), "node")
        max_items = op.getAttribute("max_items")
        if max_items is not None:
            try:
                max_items = int(max_items)
                if max_items < 0:
                    raise ValueError
            except ValueError:
                raise error("bad-request", text="max_items must be a non-negative number")
        ids = []
        for c in op.elements():
            if c.name == "item" and c.uri == NS_PUBSUB:
                ids.append(check_id(c.getAttribute("id"), "item"))
        if len(ids) > self.cfg.pep_max_items_per_node:
            raise error("not-acceptable", text="too many item ids")
        user = owner.split("@", 1)[0]
        virtual = self.virtual_nodes.get(node)
        if virtual is not None:
            if _bare(requester) != owner:
                raise error("not-allowed", "closed-node")
            d = virtual.get(user)
        else:
            d = self.get_items(user, node, _bare(requester), ids or None, max_items)

        def got(rows):
            res = domish.Element((NS_PUBSUB, "pubsub"))
            its = res.addElement("items")
            its["node"] = node
            for item_id, publisher, payload in rows:
                it = its.addElement("item")
                it["id"] = item_id
                it["publisher"] = publisher
                it.addChild(pubsub.parse_payload(payload))
            return res
        return d.addCallback(got)

    def _subscriber(self, op, requester):
        jid = op.getAttribute("jid")
        if not jid:
            raise error("bad-request", "jid-required")
        if _bare(jid) != _bare(requester):
            raise error("bad-request", "invalid-jid")
        if len(jid) > 3071:
            raise error("bad-request", "invalid-jid")
        return jid

    def _subscribe(self, op, ps, owner, requester):
        node = check_id(op.getAttribute("node"), "node")
        jid = self._subscriber(op, requester)
        user = owner.split("@", 1)[0]
        d = self.store.node_config(user, node)
        state = {}

        def got(config):
            if config is None:
                raise error("item-not-found")
            refused = may_read(config, owner, _bare(requester))
            if refused is not None:
                raise refused
            state["config"] = config
            return self.store.subscribe(user, node, jid, self.cfg.pep_max_subscribers_per_node)

        def done(_):
            res = domish.Element((NS_PUBSUB, "pubsub"))
            sub = res.addElement("subscription")
            sub["node"], sub["jid"], sub["subscription"] = node, jid, "subscribed"
            if state["config"].get("send_last_published_item") != "never":
                reactor.callLater(0, self._send_last, owner, node, state["config"], jid)
            return res
        return d.addCallback(got).addCallback(done).addErrback(self._limits)

    def _unsubscribe(self, op, ps, owner, requester):
        node = check_id(op.getAttribute("node"), "node")
        jid = self._subscriber(op, requester)
        d = self.store.unsubscribe(owner.split("@", 1)[0], node, jid)

        def done(ok):
            if not ok:
                raise error("unexpected-request", "not-subscribed")
            return None
        return d.addCallback(done)

    def _subscriptions(self, op, ps, owner, requester):
        user = owner.split("@", 1)[0]
        node_filter = op.getAttribute("node")
        d = self.store.subscriptions_of(_bare(requester))

        def got(rows):
            res = domish.Element((NS_PUBSUB, "pubsub"))
            subs = res.addElement("subscriptions")
            for u, node in rows:
                if u == user and (not node_filter or node == node_filter):
                    s = subs.addElement("subscription")
                    s["node"], s["jid"], s["subscription"] = node, _bare(requester), "subscribed"
            return res
        return d.addCallback(got)

    def _affiliations(self, op, ps, owner, requester):
        user = owner.split("@", 1)[0]
        res = domish.Element((NS_PUBSUB, "pubsub"))
        affs = res.addElement("affiliations")
        if _bare(requester) != owner:
            return res

        def got(nodes):
            for node in nodes:
                a = affs.addElement("affiliation")
                a["node"], a["affiliation"] = node, "owner"
            return res
        return self.store.nodes(user).addCallback(got)

    def _create(self, op, ps, owner, requester):
        if _bare(requester) != owner:
            raise error("forbidden", etype="auth")
        node = op.getAttribute("node")
        if not node:
            raise error("not-acceptable", "nodeid-required")
        check_id(node, "node")
        config = pubsub.default_config(self.cfg)
        for c in ps.elements():
            if c.name == "configure":
                config.update(pubsub.parse_form(c, NS_NODE_CONFIG, self.cfg, ignore_unknown=True))
        d = self.store.create_node(owner.split("@", 1)[0], node, config,
                                   self.cfg.pep_max_nodes_per_account)

        def done(created):
            if not created:
                raise error("conflict")
            return None
        return d.addCallback(done).addErrback(self._limits)

    # -- the API other modules use ------------------------------------------------

    def _limits(self, f):
        f.trap(LimitExceeded)
        what = f.value.what
        if what == "nodes":
            raise error("not-allowed", "max-nodes-exceeded",
                        text=f"at most {self.cfg.pep_max_nodes_per_account} nodes per account")
        if what == "subscribers":
            raise error("not-allowed", "too-many-subscriptions")
        raise error("not-acceptable", text=what)

    def publish_item(self, username, node, item_id, payload, options=None, publisher=None,
                     check=False):
        """Store ``payload`` (an Element) as item ``item_id`` and notify; Deferred of the node config.

        ``options`` configure an auto-created node; with ``check`` they are
        also XEP-0060 §7.1.5 preconditions on an existing node.
        """
        owner = f"{username}@{self.domain}"
        text = pubsub.serialise(payload)
        if len(text.encode("utf-8")) > self.cfg.pep_max_item_size:
            return defer.fail(error("not-acceptable", "payload-too-big",
                                    text=f"items are limited to {self.cfg.pep_max_item_size} bytes"))
        options = options or {}
        config = pubsub.default_config(self.cfg)
        config.update(options)
        precheck = pubsub.precondition_check(options) if (check and options) else None
        d = self.store.publish(username, node, item_id, publisher or owner, text, config,
                               self.cfg.pep_max_nodes_per_account, precheck)

        def done(result):
            config, _created = result
            return self.store.subscribers(username, node).addCallback(
                lambda subs: self._published(owner, username, node, config, item_id,
                                             publisher or owner, payload, subs))
        return d.addErrback(self._limits).addCallback(done)

    def _published(self, owner, username, node, config, item_id, publisher, payload, subs):
        def event():
            ev = domish.Element((NS_PUBSUB_EVENT, "event"))
            its = ev.addElement("items")
            its["node"] = node
            it = its.addElement("item")
            it["id"] = item_id
            it["publisher"] = publisher
            if config.get("deliver_payloads", True):
                it.addChild(payload)
            return ev
        self._event(owner, node, config, event, subs)
        self._changed(username, node, "publish", item_id, payload)
        return config

    def retract_item(self, username, node, item_id, notify=False):
        owner = f"{username}@{self.domain}"
        d = self.store.node_config(username, node)
        state = {}

        def got(config):
            if config is None:
                raise error("item-not-found")
            state["config"] = config
            return self.store.retract(username, node, item_id)

        def done(ok):
            if not ok:
                raise error("item-not-found")
            return self.store.subscribers(username, node)

        def notify_all(subs):
            config = state["config"]
            if notify or config.get("notify_retract"):
                def event():
                    ev = domish.Element((NS_PUBSUB_EVENT, "event"))
                    its = ev.addElement("items")
                    its["node"] = node
                    its.addElement("retract")["id"] = item_id
                    return ev
                self._event(owner, node, config, event, subs)
            self._changed(username, node, "retract", item_id, None)
        return d.addCallback(got).addCallback(done).addCallback(notify_all)

    def delete_node(self, username, node):
        owner = f"{username}@{self.domain}"
        d = self.store.node_config(username, node)
        state = {}

        def got(config):
            if config is None:
                raise error("item-not-found")
            state["config"] = config
            return self.store.delete_node(username, node)

        def done(subs):
            if subs is None:
                raise error("item-not-found")
            if state["config"].get("notify_delete", True):
                self._event(owner, node, state["config"], self._simple_event("delete", node), subs)
            self._changed(username, node, "delete", None, None)
        return d.addCallback(got).addCallback(done)

    def get_items(self, username, node, requester_bare, ids=None, max_items=None):
        """Deferred [(id, publisher, payload xml)] after the access check (item-not-found, ...)."""
        owner = f"{username}@{self.domain}"
        d = self.store.node_config(username, node)

        def got(config):
            if config is None:
                raise error("item-not-found")
            refused = may_read(config, owner, requester_bare)
            if refused is not None:
                raise refused
            return self.store.items(username, node, ids, max_items)
        return d.addCallback(got)

    def _changed(self, username, node, kind, item_id, payload):
        for fn in self.listeners:
            try:
                fn(username, node, kind, item_id, payload)
            except Exception:
                log.failure("pep: listener {fn} failed on {kind} {node}", fn=fn, kind=kind, node=node)

    # -- notifications ------------------------------------------------------------

    @staticmethod
    def _simple_event(name, node):
        def event():
            ev = domish.Element((NS_PUBSUB_EVENT, "event"))
            ev.addElement(name)["node"] = node
            return ev
        return event

    def _recipients(self, owner, node, config, subscribers):
        own = [s for s in self.router.sessions.resources(owner).values() if s.available]
        out = [s.full for s in own if node in self.interest.get(s, ())]
        for jid in subscribers or ():
            bare = _bare(jid)
            if may_read(config, owner, bare) is not None:
                continue
            if bare == owner and jid == bare:
                out.extend(s.full for s in own)
            else:
                out.append(jid)
        seen = set()
        return [j for j in out if not (j in seen or seen.add(j))]

    def _event(self, owner, node, config, make_event, subscribers):
        if not config.get("deliver_notifications", True):
            return
        for to in self._recipients(owner, node, config, subscribers):
            self._send_event(owner, to, make_event())

    def _send_event(self, owner, to, event):
        msg = domish.Element((None, "message"))
        msg["from"], msg["to"], msg["type"] = owner, to, "headline"
        msg["id"] = secrets.token_hex(8)
        msg.addChild(event)
        self.router.route(msg)

    def _send_last(self, owner, node, config, to):
        """Send the newest item of ``node`` to ``to`` (XEP-0060 §6.1.7, XEP-0163 §4.3.4)."""
        user = owner.split("@", 1)[0]
        d = self.store.items(user, node, None, 1)

        def got(rows):
            for item_id, publisher, payload in rows:
                ev = domish.Element((NS_PUBSUB_EVENT, "event"))
                its = ev.addElement("items")
                its["node"] = node
                it = its.addElement("item")
                it["id"], it["publisher"] = item_id, publisher
                if config.get("deliver_payloads", True):
                    it.addChild(pubsub.parse_payload(payload))
                self._send_event(owner, to, ev)
        d.addCallback(got)
        d.addErrback(lambda f: log.failure("pep: sending the last item of {node} failed", f, node=node))
        return d

    # -- presence and caps --------------------------------------------------------

    def on_presence(self, event):
        el, session = event.stanza, event.session
        attrs = el.attributes
        if attrs.get("to") or attrs.get("type"):
            return None
        first = session not in self.interest
        if first:
            self.interest[session] = frozenset()
            self._last_for_subscriptions(session)
        caps = caps_of(el)
        if caps is None:
            return None
        h, cnode, ver = caps
        nodes = self.caps.get((h, ver))
        if nodes is not None:
            self._set_interest(session, nodes)
        else:
            self._resolve(session, h, cnode, ver)
        return None

    def _set_interest(self, session, nodes):
        old = self.interest.get(session, frozenset())
        self.interest[session] = nodes
        new = nodes - old
        if not new:
            return
        owner = session.bare
        user = owner.split("@", 1)[0]
        d = self.store.nodes(user)

        def got(configs):
            # read after the presence was processed (the hook runs before c2s marks it available)
            if not session.available or self.router.sessions.full.get(session.full) is not session:
                return
            for node in sorted(new):
                config = configs.get(node)
                if config is not None and config.get("send_last_published_item") == "on_sub_and_presence":
                    self._send_last(owner, node, config, session.full)
        d.addCallback(got)
        d.addErrback(lambda f: log.failure("pep: last items for {jid} failed", f, jid=session.full))

    def _last_for_subscriptions(self, session):
        """Initial presence: the last item of every node the account subscribed to elsewhere."""
        d = self.store.subscriptions_of(session.bare)

        def got(rows):
            for username, node in rows:
                owner = f"{username}@{self.domain}"
                if owner == session.bare:
                    continue      # own nodes: by +notify
                self.store.node_config(username, node).addCallback(self._last_if, owner, node, session)
        d.addCallback(got)
        d.addErrback(lambda f: log.failure("pep: subscriptions of {jid} failed", f, jid=session.bare))

    def _last_if(self, config, owner, node, session):
        if config is not None and config.get("send_last_published_item") == "on_sub_and_presence" \
                and may_read(config, owner, session.bare) is None:
            self._send_last(owner, node, config, session.full)

    def _resolve(self, session, h, cnode, ver):
        key = (h, ver)
        waiting = self.waiting.get(key)
        if waiting is not None:
            if len(waiting) < MAX_WAITING_PER_VER:
                waiting.append(weakref.ref(session))
            return
        if len(self.pending) >= MAX_PENDING_CAPS:
            return
        iq_id = "caps-" + secrets.token_hex(8)
        self.pending[iq_id] = (session.full, h, ver)
        self.waiting[key] = [weakref.ref(session)]
        iq = domish.Element((None, "iq"))
        iq["type"], iq["id"], iq["from"], iq["to"] = "get", iq_id, self.domain, session.full
        iq.addElement((NS_DISCO_INFO, "query"))["node"] = f"{cnode}#{ver}"
        reactor.callLater(CAPS_QUERY_TIMEOUT, self._expire, iq_id)
        self.router.route(iq)

    def _expire(self, iq_id):
        entry = self.pending.pop(iq_id, None)
        if entry is not None:
            self.waiting.pop((entry[1], entry[2]), None)

    def on_client_iq(self, event):
        el = event.stanza
        attrs = el.attributes
        t = attrs.get("type")
        if t != "result" and t != "error":
            return None
        entry = self.pending.get(attrs.get("id"))
        if entry is None or attrs.get("from") != entry[0]:
            return None
        del self.pending[attrs["id"]]
        full, h, ver = entry
        key = (h, ver)
        waiting = self.waiting.pop(key, [])
        if t == "error":
            return True
        query = None
        for c in el.elements():
            if c.uri == NS_DISCO_INFO and c.name == "query":
                query = c
        if query is None:
            return True
        try:
            ok, features = verify(h, ver, query)
        except (ValueError, KeyError):
            return True
        nodes = notify_nodes(features)
        if ok:
            self.caps.put(key, nodes)
        for ref in waiting:
            s = ref()
            if s is None or self.router.sessions.full.get(s.full) is not s:
                continue
            if ok or s.full == full:    # an unverified answer is trusted for its own sender only
                self._set_interest(s, nodes)
        return True


def install(router, cfg, store):
    return PEP(router, cfg, store.personal).install()
