"""Private XML storage (XEP-0049): any namespace, per account, bounded.

A set stores the children of ``<query xmlns='jabber:iq:private'/>`` grouped
by namespace (one or more elements per namespace, §2); a get asks for one
namespace (§3: more than one child is refused with ``not-acceptable``) and
gets what was stored, or the empty element it asked with. A query without a
child, or a child in a ``jabber:`` namespace or without one, is
``not-acceptable`` (§2, §3). Only the account itself may use its storage:
a request addressed to another account is ``forbidden`` (§3; Prosody's
bookmarks module answers with the requester's own data instead).

Other modules take over a namespace with :meth:`PrivateStorage.virtual`
(``storage:bookmarks`` is kept in sync with XEP-0402 PEP bookmarks by
:mod:`xmppd.services.bookmarks`).

Limit: ``max_private_storage`` bytes of serialised XML per account (all
namespaces together); a set beyond it changes nothing and gets
``not-acceptable``.
"""
from twisted.internet import defer
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xmppd import pubsub
from xmppd.storage.personal import LimitExceeded

NS_PRIVATE = "jabber:iq:private"


def _bare(jid):
    return jid.split("/", 1)[0]


class PrivateStorage:
    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.store = store           # AsyncPersonalStore
        self.virtuals = {}           # namespace -> (get(username, el) -> Deferred [els], set(username, els))

    def install(self):
        self.router.iq_handlers[NS_PRIVATE] = self.iq
        self.router.account_features.append(NS_PRIVATE)
        return self

    def virtual(self, namespace, get, set):
        self.virtuals[namespace] = (get, set)

    def iq(self, iq, child, target):
        requester = _bare(iq.getAttribute("from") or "")
        if target is None or target != requester:
            raise StanzaError("forbidden", type="auth")
        if child.name != "query":
            raise StanzaError("bad-request", type="modify")
        elements = list(child.elements())
        if not elements:
            raise StanzaError("not-acceptable", type="modify", text="name the namespace to store or get")
        for el in elements:
            if not el.uri or el.uri.startswith("jabber:") or el.uri == NS_PRIVATE:
                raise StanzaError("not-acceptable", type="modify",
                                  text="jabber: namespaces cannot be stored")
        username = target.split("@", 1)[0]
        if iq.getAttribute("type") == "get":
            if len(elements) != 1:
                raise StanzaError("not-acceptable", type="modify", text="one namespace per get")
            return self._get(username, elements[0])
        return self._set(username, elements)

    def _answer(self, els):
        q = domish.Element((NS_PRIVATE, "query"))
        for el in els:
            q.addChild(el)
        return q

    def _get(self, username, asked):
        ns = asked.uri
        if ns in self.virtuals:
            return self.virtuals[ns][0](username, asked).addCallback(self._answer)

        def got(text):
            if text is None:
                return self._answer([domish.Element((ns, asked.name))])
            return self._answer(pubsub.parse_elements(text))
        return self.store.get_private(username, ns).addCallback(got)

    def _set(self, username, elements):
        groups = {}
        for el in elements:
            groups.setdefault(el.uri, []).append(el)
        plain = {}
        for ns, els in groups.items():
            text = "".join(e.toXml() for e in els)
            if len(text.encode("utf-8")) > self.cfg.max_private_storage:
                raise StanzaError("not-acceptable", type="modify",
                                  text=f"private storage is limited to {self.cfg.max_private_storage} bytes")
            if ns not in self.virtuals:
                plain[ns] = text
        d = defer.succeed(None)
        if plain:
            d.addCallback(lambda _: self.store.set_private(username, plain, self.cfg.max_private_storage))
        for ns, els in groups.items():
            if ns in self.virtuals:
                d.addCallback(lambda _, s=self.virtuals[ns][1], e=els: s(username, e))

        def limit(f):
            f.trap(LimitExceeded)
            raise StanzaError("not-acceptable", type="modify",
                              text=f"private storage is limited to {self.cfg.max_private_storage} bytes")
        return d.addErrback(limit).addCallback(lambda _: None)


def install(router, cfg, store):
    return PrivateStorage(router, cfg, store.personal).install()
