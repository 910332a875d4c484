"""The server's own entity capabilities (XEP-0115 §6.3): ``<c/>`` in the stream features.

After authentication the features carry ``<c xmlns='http://jabber.org/protocol/caps'
hash='sha-1' node=NODE ver=V/>``, where V is the §5.1 hash of the server's own
disco#info answer (identities, features and the XEP-0128 forms of XEP-0157 /
XEP-0455). A client that has seen V before knows the server's features without
a disco#info round trip; a disco#info query to ``NODE#V`` gets the same answer
as one without a node (§6.2). V is computed once, on the first login, and again
after a reload (the contact addresses are part of the answer).
"""
import base64
import hashlib

from twisted.words.xish import domish

from xmppd.pubsub.caps import NS_CAPS, verification_string
from xmppd.services import NS_DISCO_INFO

NODE = "https://xmppd.invalid/caps"   # §4: a URI naming the software; xmppd has no home page


class ServerCaps:
    def __init__(self, router, cfg):
        self.router = router
        self.cfg = cfg
        self.ver = None
        self.feature = None      # the <c/> element as text, once computed

    def install(self, manager):
        manager.events.add("stream-features", self.features)
        self.router.hooks.add("server/reload", self.forget)
        return self

    def features(self, session, parts):
        if session.username is not None:     # after SASL, beside <bind/>
            parts.append(self.feature or self._compute())

    def _disco(self):
        iq = domish.Element((None, "iq"))
        iq["type"], iq["from"], iq["to"] = "get", self.cfg.domain, self.cfg.domain
        query = iq.addElement((NS_DISCO_INFO, "query"))
        return self.router.iq_handlers[NS_DISCO_INFO](iq, query, None)

    def _compute(self):
        s, _ = verification_string(self._disco())
        ver = base64.b64encode(hashlib.sha1(s.encode("utf-8")).digest()).decode("ascii")
        nodes = self.router.disco_nodes
        if self.ver is not None:
            nodes.pop(f"{NODE}#{self.ver}", None)
        self.ver = ver
        nodes[f"{NODE}#{ver}"] = self._node_info
        self.feature = f"<c xmlns='{NS_CAPS}' hash='sha-1' node='{NODE}' ver='{ver}'/>"
        return self.feature

    def _node_info(self, iq, child, target):
        if target is not None or iq.getAttribute("type") != "get" or child.name != "query" \
                or child.uri != NS_DISCO_INFO:
            from twisted.words.protocols.jabber.error import StanzaError
            raise StanzaError("item-not-found", type="cancel")
        answer = self._disco()
        answer["node"] = child.getAttribute("node")
        return answer

    def forget(self, event):
        self.feature = None      # recomputed on the next login


def install(manager, router, cfg):
    return ServerCaps(router, cfg).install(manager)
