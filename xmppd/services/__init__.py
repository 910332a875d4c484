"""The server's own IQ handlers: disco, ping, version, roster (empty), session.

``install(router, cfg, store)`` registers one function per payload
namespace in ``router.iq_handlers`` (dict dispatch, no xpath). Each handler
is ``fn(iq, child, target)``: ``target`` is None when the IQ is addressed
to the server and the bare JID string when it is addressed to an account
(the server answers on the account's behalf, RFC 6120 §10.3.3). It returns
the result payload (or None for an empty result) or raises StanzaError.
IQs whose namespace has no handler get service-unavailable from the router.
"""
import platform

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

import xmppd

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_ROSTER = "jabber:iq:roster"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

SERVER_FEATURES = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, NS_ROSTER)
ACCOUNT_FEATURES = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING)


def _requester_bare(iq):
    frm = iq.getAttribute("from") or ""
    return frm.split("/", 1)[0]


def _only_get(iq):
    if iq.getAttribute("type") != "get":
        raise StanzaError("bad-request", type="modify")


class ServerServices:
    """Answers for the server domain and for bare JIDs of local accounts."""

    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.store = store
        self.os_name = platform.system()

    def install(self):
        h = self.router.iq_handlers
        h[NS_DISCO_INFO] = self.disco_info
        h[NS_DISCO_ITEMS] = self.disco_items
        h[NS_PING] = self.ping
        h[NS_VERSION] = self.version
        h[NS_ROSTER] = self.roster
        h[NS_SESSION] = self.session
        self.router.server_features.extend(SERVER_FEATURES)
        self.router.account_features.extend(ACCOUNT_FEATURES)
        if self.cfg.muc_domain and not any(c["domain"] == self.cfg.muc_domain
                                           for c in self.cfg.components):   # not external
            self.router.server_items.append((self.cfg.muc_domain, "Chatrooms"))
        self.router.user_exists = self.store.accounts.exists

    def disco_info(self, iq, child, target):
        _only_get(iq)
        node = child.getAttribute("node")
        if node:
            return self._node(iq, child, target, node)
        q = domish.Element((NS_DISCO_INFO, "query"))
        ident = q.addElement("identity")
        if target is None:
            ident["category"], ident["type"], ident["name"] = "server", "im", "xmppd"
            features = self.router.server_features
            frm = iq.getAttribute("from") or ""
            if frm.rpartition("@")[2].partition("/")[0] in getattr(self.router, "components", ()):
                features = features + getattr(self.router, "component_features", [])  # component/
        else:
            ident["category"], ident["type"] = "account", "registered"
            for category, itype in self.router.account_identities:
                extra = q.addElement("identity")
                extra["category"], extra["type"] = category, itype
            features = self.router.account_features
        for f in features:
            q.addElement("feature")["var"] = f
        if target is None:
            for form in self.router.server_info_forms:
                el = form()
                if el is not None:
                    q.addChild(el)
        return q

    def _node(self, iq, child, target, node):
        fn = self.router.disco_nodes.get(node)
        if fn is None:
            raise StanzaError("item-not-found", type="cancel")
        return fn(iq, child, target)

    def disco_items(self, iq, child, target):
        _only_get(iq)
        node = child.getAttribute("node")
        if node:
            return self._node(iq, child, target, node)
        q = domish.Element((NS_DISCO_ITEMS, "query"))
        if target is None:
            listed = set()
            for jid, name in self.router.server_items:
                listed.add(jid)
                item = q.addElement("item")
                item["jid"] = jid
                if name:
                    item["name"] = name
            # connected XEP-0114 components (xmppd.component.server)
            for jid in sorted(getattr(self.router, "components", ())):
                if jid not in listed:
                    item = q.addElement("item")
                    item["jid"] = jid
                    if jid == self.cfg.muc_domain:
                        item["name"] = "Chatrooms"
        return q

    def ping(self, iq, child, target):
        _only_get(iq)
        return None

    def version(self, iq, child, target):
        _only_get(iq)
        if target is not None:
            raise StanzaError("service-unavailable", type="cancel")
        q = domish.Element((NS_VERSION, "query"))
        q.addElement("name", content="xmppd")
        q.addElement("version", content=xmppd.__version__)
        q.addElement("os", content=self.os_name)
        return q

    def roster(self, iq, child, target):
        """No rosters: an empty list for the owner; changes are refused."""
        own = _requester_bare(iq)
        if target is not None and target != own:
            raise StanzaError("forbidden", type="auth")
        if iq.getAttribute("type") == "set":
            raise StanzaError("not-allowed", type="cancel",
                              text="this server keeps no rosters")
        return domish.Element((NS_ROSTER, "query"))

    def session(self, iq, child, target):
        """RFC 3921 session establishment: a no-op kept for older clients."""
        if iq.getAttribute("type") != "set":
            raise StanzaError("bad-request", type="modify")
        return None


def install(router, cfg, store):
    services = ServerServices(router, cfg, store)
    services.install()
    from xmppd.services import (admin, admin_requests, blocking, carbons, contact_info,
                                mam, offline, register)
    offline.install(router, cfg, store)
    register.install(router, cfg, store)
    blocking.install(router, cfg, store)
    carbons.install(router, cfg)
    admin_requests.install(router, cfg, store)
    admin.install(router, cfg, store)
    contact_info.install(router, cfg)
    from xmppd.pubsub import pep
    from xmppd.services import private, vcard
    router.pep = pep.install(router, cfg, store)
    vcard.install(router, cfg, store, router.pep)
    router.private = private.install(router, cfg, store)
    from xmppd.services import bookmarks
    bookmarks.install(router, cfg, router.pep)
    mam.install(router, cfg, store)
    from xmppd.services import push
    push.install(router, cfg, store)
    return services
