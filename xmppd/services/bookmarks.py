"""Bookmarks: XEP-0402 PEP bookmarks, kept in sync with XEP-0048 (private storage and legacy PEP).

The one copy is the XEP-0402 node ``urn:xmpp:bookmarks:1`` (one item per
room, item id = room JID; created with max_items ``max``, whitelist access,
``send_last_published_item`` never, XEP-0402 §3). The two XEP-0048 views
are computed from it and write into it (``#compat`` and ``#compat-pep``,
XEP-0402 §4):

* private storage (XEP-0049) of ``<storage xmlns='storage:bookmarks'/>``:
  a get builds the storage element from the items; a set replaces the set
  of rooms (new and changed rooms published, missing ones retracted);
* the legacy PEP node ``storage:bookmarks`` (item ``current``): items get and
  publish do the same, and every change of the XEP-0402 node is also sent as
  a ``storage:bookmarks`` notification to the owner's resources that asked
  for it with ``storage:bookmarks+notify``.

So a client using either API sees the other's bookmarks. Autojoin is kept
as data; the server never joins rooms for the user. XEP-0048 URL bookmarks
have no XEP-0402 equivalent and are dropped, as in Prosody. A set of more
rooms than ``pep_max_items_per_node`` is refused with ``not-acceptable``.
"""
from twisted.internet import defer, reactor
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xmppd import pubsub
from xmppd.jid import parse_or_none

NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"

log = Logger(namespace="xmppd.bookmarks")


def _text_child(el, name):
    for c in el.elements():
        if c.name == name:
            return str(c)
    return None


def _truthy(v):
    return v in ("1", "true")


def legacy_storage(rows):
    """XEP-0048 <storage/> from XEP-0402 items [(id, publisher, payload xml)]."""
    storage = domish.Element((NS_LEGACY, "storage"))
    for item_id, _publisher, payload in rows:
        try:
            b = pubsub.parse_payload(payload)
        except Exception:
            continue
        if b.name != "conference" or b.uri != NS_BOOKMARKS:
            continue
        conf = storage.addElement("conference")
        conf["jid"] = item_id
        if b.getAttribute("name"):
            conf["name"] = b["name"]
        conf["autojoin"] = "true" if _truthy(b.getAttribute("autojoin")) else "false"
        for name in ("nick", "password"):
            value = _text_child(b, name)
            if value is not None:
                conf.addElement(name, content=value)
    return storage


def conference_of(legacy):
    """(room jid, XEP-0402 <conference/>) from an XEP-0048 <conference/>, or None if unusable."""
    j = parse_or_none(legacy.getAttribute("jid"))
    if j is None or j.user is None or j.resource is not None:
        return None
    conf = domish.Element((NS_BOOKMARKS, "conference"))
    if legacy.getAttribute("name"):
        conf["name"] = legacy["name"]
    conf["autojoin"] = "true" if _truthy(legacy.getAttribute("autojoin")) else "false"
    for name in ("nick", "password"):
        value = _text_child(legacy, name)
        if value is not None:
            conf.addElement(name, content=value)
    return j.userhost(), conf


class Bookmarks:
    def __init__(self, router, cfg, pep, private):
        self.router = router
        self.cfg = cfg
        self.pep = pep
        self.domain = cfg.domain
        self._broadcast_due = set()
        self.options = {"max_items": cfg.pep_max_items_per_node,      # XEP-0402 §3: 'max'
                        "send_last_published_item": "never", "access_model": "whitelist"}

    def install(self):
        self.pep.virtual_nodes[NS_LEGACY] = self
        self.pep.listeners.append(self.on_pep_change)
        self.router.private.virtual(NS_LEGACY, self.private_get, self.private_set)
        self.router.account_features.extend((NS_BOOKMARKS + "#compat", NS_BOOKMARKS + "#compat-pep"))
        return self

    def _current(self, username):
        d = self.pep.get_items(username, NS_BOOKMARKS, f"{username}@{self.domain}")

        def none(f):
            f.trap(StanzaError)
            if f.value.condition == "item-not-found":
                return []
            return f
        return d.addErrback(none)

    # -- XEP-0049 view ------------------------------------------------------------

    def private_get(self, username, asked):
        return self._current(username).addCallback(lambda rows: [legacy_storage(rows)])

    def private_set(self, username, elements):
        storages = [e for e in elements if e.name == "storage"]
        if len(storages) != 1:
            return defer.fail(StanzaError("not-acceptable", type="modify",
                                          text="one <storage/> element"))
        return self.sync_from_legacy(username, storages[0])

    # -- legacy PEP view (virtual node) -------------------------------------------

    def get(self, username):
        owner = f"{username}@{self.domain}"
        return self._current(username).addCallback(
            lambda rows: [("current", owner, legacy_storage(rows).toXml())])

    def publish(self, username, payload):
        if payload.name != "storage" or payload.uri != NS_LEGACY:
            return defer.fail(pubsub.error("bad-request", "invalid-payload"))
        return self.sync_from_legacy(username, payload)

    # -- sync ------------------------------------------------------------------------

    def sync_from_legacy(self, username, storage):
        """Make the XEP-0402 node hold exactly the rooms of an XEP-0048 <storage/>."""
        wanted = {}
        for c in storage.elements():
            if c.name == "conference":
                conv = conference_of(c)
                if conv is not None:
                    wanted[conv[0]] = conv[1]
        if len(wanted) > self.cfg.pep_max_items_per_node:
            return defer.fail(StanzaError("not-acceptable", type="modify",
                                          text=f"at most {self.cfg.pep_max_items_per_node} bookmarks"))
        d = self._current(username)

        def apply(rows):
            have = {item_id: payload for item_id, _p, payload in rows}
            chain = defer.succeed(None)
            for jid, conf in wanted.items():
                if have.get(jid) == pubsub.serialise(conf):
                    continue
                chain.addCallback(lambda _, j=jid, c=conf: self.pep.publish_item(
                    username, NS_BOOKMARKS, j, c, self.options))
            for jid in have:
                if jid not in wanted:
                    chain.addCallback(lambda _, j=jid: self.pep.retract_item(username, NS_BOOKMARKS, j))
            return chain
        return d.addCallback(apply).addCallback(lambda _: None)

    def on_pep_change(self, username, node, kind, item_id, payload):
        """Any change of the XEP-0402 node: one legacy notification (coalesced per account)."""
        if node != NS_BOOKMARKS or username in self._broadcast_due:
            return
        self._broadcast_due.add(username)
        reactor.callLater(0, self._legacy_broadcast, username)

    def _legacy_broadcast(self, username):
        self._broadcast_due.discard(username)
        owner = f"{username}@{self.domain}"
        targets = [s for s in self.router.sessions.resources(owner).values()
                   if s.available and NS_LEGACY in self.pep.interest.get(s, ())]
        if not targets:
            return

        def send(rows):
            storage = legacy_storage(rows)
            for s in targets:
                ev = domish.Element((pubsub.NS_PUBSUB_EVENT, "event"))
                its = ev.addElement("items")
                its["node"] = NS_LEGACY
                it = its.addElement("item")
                it["id"] = "current"
                it.addChild(storage)
                self.pep._send_event(owner, s.full, ev)
        d = self._current(username).addCallback(send)
        d.addErrback(lambda f: log.failure("bookmarks: legacy notification for {user} failed", f,
                                           user=username))


def install(router, cfg, pep):
    return Bookmarks(router, cfg, pep, router.private).install()
