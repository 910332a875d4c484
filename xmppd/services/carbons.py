"""XEP-0280 Message Carbons: every resource that enables it sees the account's conversations.

The flag lives on the session (``session.carbons``, set by ``<enable/>``,
cleared by ``<disable/>`` or the end of the session). Two router events do
the copying:

* ``message/delivered`` (§6, received copies): after a message to a local
  account was delivered (or stored offline), each carbons-enabled resource of
  that account that did not get the original gets a ``<received/>`` copy.
* ``client/message`` (§7, sent copies): a message a local client sends is
  copied in a ``<sent/>`` wrapper to the account's other carbons-enabled
  resources. It runs after the blocking module, so a refused message is not
  copied.

Eligibility (§5.1): not with ``<private/>`` (XEP-0280 §8) or a ``<no-copy/>``
hint (XEP-0334); never groupchat, headline, errors (we cannot tell which
message an error answers) or carbons themselves; ``chat`` messages, ``normal`` messages
with a body or an IM payload (receipts, chat states, markers), and
invitations (XEP-0249 direct and XEP-0045 mediated). MUC private messages
(type chat with a ``muc#user`` ``<x/>``, or to/from an occupant JID of a
local MUC domain) are not copied: incoming ones are already replicated by
the MUC to each joined session of the nick, and outgoing copies would reach
clients that are not in the room (§5.1 note).

Each copy is serialised once and written to each target with its own ``to``.
"""
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xmppd.wire.serialize import to_bytes

NS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_CONFERENCE = "jabber:x:conference"
IM_PAYLOADS = frozenset(("urn:xmpp:receipts", "http://jabber.org/protocol/chatstates",
                         "urn:xmpp:chat-markers:0"))


def eligible(el, muc_hosts, counterpart):
    """§5.1: True if message ``el`` is copied; ``counterpart`` is the other party's JID string."""
    t = el.attributes.get("type") or "normal"
    if t != "chat" and t != "normal":
        return False                # groupchat, headline, error
    body = im = muc_user = invite = False
    for child in el.elements():
        uri = child.uri
        if uri == NS:
            return False            # <private/>, or a carbon itself
        if uri == NS_HINTS:
            if child.name == "no-copy":
                return False
        elif uri == NS_MUC_USER:
            muc_user = True
            for c in child.elements():
                if c.name == "invite":
                    invite = True
        elif uri == NS_CONFERENCE:
            invite = True
        elif child.name == "body":
            body = True
        elif uri in IM_PAYLOADS:
            im = True
    if invite:
        return True
    if counterpart and "/" in counterpart:
        host = counterpart.split("/", 1)[0].rpartition("@")[2]
        if muc_user or host in muc_hosts:
            return False            # a MUC private message
    if t == "chat":
        return True
    return body or im               # type normal


class Carbons:
    def __init__(self, router, cfg):
        self.router = router
        self.cfg = cfg

    def install(self):
        self.router.iq_handlers[NS] = self.on_iq
        self.router.server_features.append(NS)
        self.enabled = set()         # sessions with carbons on
        self._hooked = False
        self._hooks = (("message/delivered", self.on_delivered), ("client/message", self.on_sent))

    def _sync_hooks(self):
        """The copy hooks cost every message an event: registered only while someone uses carbons."""
        want = bool(self.enabled)
        if want == self._hooked:
            return
        hooks = self.router.hooks
        for name, fn in self._hooks:
            if want:
                hooks.add(name, fn)
            else:
                hooks.remove(name, fn)
        self._hooked = want

    def forget(self, session):
        """A session ended (the session layer's ``session-unbound``)."""
        if session in self.enabled:
            self.enabled.discard(session)
            self._sync_hooks()

    def on_iq(self, iq, child, target):
        """§3/§4: enable or disable for the requesting resource; idempotent (§9.1)."""
        if iq.getAttribute("type") != "set" or child.name not in ("enable", "disable"):
            raise StanzaError("bad-request", type="modify")
        session = self.router.sessions.full.get(iq.getAttribute("from") or "")
        if session is None or (target is not None and target != session.bare):
            raise StanzaError("not-allowed", type="cancel")
        on = session.carbons = child.name == "enable"
        if on:
            self.enabled.add(session)
        else:
            self.enabled.discard(session)
        self._sync_hooks()
        return None

    def on_delivered(self, ev):
        resources = self.router.sessions.bare.get(ev.jid.userhost())
        if not resources:
            return None
        got = ev.sessions
        if len(resources) <= len(got) and not ev.stored:
            return None             # everyone got the original
        targets = [s for s in resources.values()
                   if getattr(s, "carbons", False) and s not in got]
        if targets:
            el = ev.stanza
            if eligible(el, self.router.routes, el.attributes.get("from")):
                self._copy(el, "received", ev.jid.userhost(), targets)
        return None

    def on_sent(self, ev):
        session = ev.session
        resources = self.router.sessions.bare.get(session.bare)
        if not resources or len(resources) < 2:
            return None
        el = ev.stanza
        to = el.attributes.get("to") or ""
        if to.split("/", 1)[0] == session.bare:
            return None             # to ourselves: the received side copies it
        targets = [s for s in resources.values()
                   if s is not session and getattr(s, "carbons", False)]
        if targets and eligible(el, self.router.routes, to):
            self._copy(el, "sent", session.bare, targets)
        return None

    @staticmethod
    def _copy(el, direction, bare, targets):
        wrapper = domish.Element((None, "message"))
        wrapper["from"] = bare
        wrapper["to"] = "\x00"
        t = el.attributes.get("type")
        if t:
            wrapper["type"] = t
        fwd = wrapper.addElement((NS, direction)).addElement((NS_FORWARD, "forwarded"))
        # The original, serialised once, back in its jabber:client namespace.
        raw = to_bytes(el).decode("utf-8")
        fwd.addRawXml("<message xmlns='jabber:client'" + raw[len("<message"):])
        head, tail = to_bytes(wrapper).split(b"\x00", 1)
        for s in targets:
            s.write_patched(head, tail)


def install(router, cfg):
    svc = Carbons(router, cfg)
    svc.install()
    router.carbons = svc
    return svc
