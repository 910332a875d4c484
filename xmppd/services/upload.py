"""XEP-0363 HTTP File Upload: the ``upload.<domain>`` service that hands out slots.

A local user asks ``<request xmlns='urn:xmpp:http:upload:0' filename size
content-type/>`` and gets a PUT URL and a GET URL on the HTTP listener
(:mod:`xmppd.http.upload` serves them). Refusals follow §5: a file over
``upload_max_size`` is ``not-acceptable`` with ``<file-too-large>``
naming the limit; an account over ``upload_quota`` gets
``resource-constraint`` (wait). A slot is valid for
``upload_slot_timeout`` seconds; files are deleted after
``upload_expiry_days`` and with the account. Only local users get slots.
"""
import secrets
import time

from twisted.internet import task
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.jid import parse_or_none
from xmppd.storage.files import safe_name
from xmppd.wire.errors import error_reply, result_reply

log = Logger(namespace="xmppd.upload")

NS = "urn:xmpp:http:upload:0"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"
MAX_PENDING = 10_000        # slots handed out and not used yet (bounded memory)


class Slot:
    __slots__ = ("id", "owner", "name", "size", "type", "expires")

    def __init__(self, slot_id, owner, name, size, ctype, expires):
        self.id, self.owner, self.name, self.size, self.type = slot_id, owner, name, size, ctype
        self.expires = expires


class UploadService:
    """Registered on the router as the component for ``upload_domain``."""

    def __init__(self, router, cfg, files, base_url):
        self.router = router
        self.cfg = cfg
        self.domain = cfg.upload_domain
        self.files = files
        self.base_url = base_url      # fn() -> "http://host:port" of the HTTP listener
        self.pending = {}             # slot id -> Slot
        router.routes[self.domain] = self     # the router hands it stanzas with send()
        router.server_items.append((self.domain, "HTTP File Upload"))
        self._expiry = task.LoopingCall(self.expire)
        router.hooks.add("user-deleted", self.forget)

    def forget(self, ev):
        """A deleted account's open slots close: its files are gone and its quota with them."""
        for slot_id in [i for i, s in self.pending.items() if s.owner == ev.bare]:
            del self.pending[slot_id]

    def start(self):
        self._expiry.start(3600, now=True)

    def stop(self):
        if self._expiry.running:
            self._expiry.stop()

    def expire(self):
        now = time.time()
        for slot_id in [i for i, s in self.pending.items() if s.expires < now]:
            del self.pending[slot_id]
        if self.cfg.upload_expiry_days:
            n = self.files.expire(self.cfg.upload_expiry_days * 86400)
            if n:
                log.info("upload: {n} expired files deleted", n=n)

    # -- the router's side --------------------------------------------------------

    def send(self, el):
        """A stanza for ``upload.<domain>``."""
        if el.name != "iq" or el.getAttribute("type") not in ("get", "set"):
            if el.name == "message" and el.getAttribute("type") not in ("error", "groupchat", "headline"):
                self.router.bounce(el, "service-unavailable")
            return
        child = next(el.elements(), None)
        if child is None:
            self._reply(error_reply(el, "bad-request"))
            return
        t = el.getAttribute("type")
        if t == "get" and child.uri == NS_DISCO_INFO and not child.getAttribute("node"):
            self._reply(result_reply(el, self.disco_info()))
        elif t == "get" and child.uri == NS_DISCO_ITEMS:
            self._reply(result_reply(el, domish.Element((NS_DISCO_ITEMS, "query"))))
        elif t == "get" and child.uri == NS and child.name == "request":
            self._reply(self.request(el, child))
        else:
            self._reply(error_reply(el, "service-unavailable"))

    def _reply(self, reply):
        if reply.getAttribute("to"):
            self.router.route(reply)

    def disco_info(self):
        q = domish.Element((NS_DISCO_INFO, "query"))
        ident = q.addElement("identity")
        ident["category"], ident["type"], ident["name"] = "store", "file", "HTTP File Upload"
        q.addElement("feature")["var"] = NS
        x = q.addElement((NS_DATA, "x"))
        x["type"] = "result"
        for var, value in (("FORM_TYPE", NS), ("max-file-size", str(self.cfg.upload_max_size))):
            f = x.addElement("field")
            f["var"] = var
            if var == "FORM_TYPE":
                f["type"] = "hidden"
            f.addElement("value", content=value)
        return q

    def request(self, iq, req):
        sender = parse_or_none(iq.getAttribute("from") or "")
        if sender is None or sender.host != self.cfg.domain or sender.user is None:
            return error_reply(iq, "forbidden", text="uploads are for this server's users")
        owner = sender.userhost()
        name = safe_name(req.getAttribute("filename") or "")
        size = req.getAttribute("size") or ""
        ctype = (req.getAttribute("content-type") or "").strip()
        if name is None or not size.isdigit() or len(size) > 15 or int(size) <= 0:
            return error_reply(iq, "bad-request", text="a filename and a size in bytes are needed")
        size = int(size)
        if len(ctype) > 100 or any(c in ctype for c in "\r\n"):
            return error_reply(iq, "bad-request", text="invalid content-type")
        limit = self.cfg.upload_max_size
        if size > limit:
            reply = error_reply(iq, "not-acceptable", text=f"file too large (at most {limit} bytes)")
            big = reply.error.addElement((NS, "file-too-large"))
            big.addElement("max-file-size", content=str(limit))
            return reply
        quota = self.cfg.upload_quota
        if quota:
            used = self.files.usage(owner) + sum(s.size for s in self.pending.values()
                                                 if s.owner == owner)
            if used + size > quota:
                return error_reply(iq, "resource-constraint", "wait",
                                   text=f"upload quota reached ({quota} bytes)")
        if len(self.pending) >= MAX_PENDING:
            self.expire()
            if len(self.pending) >= MAX_PENDING:
                return error_reply(iq, "resource-constraint", "wait", text="too many open slots")
        slot = Slot(secrets.token_hex(16), owner, name, size, ctype,
                    time.time() + self.cfg.upload_slot_timeout)
        self.pending[slot.id] = slot
        url = self.url(slot.id, name)
        payload = domish.Element((NS, "slot"))
        payload.addElement("put")["url"] = url
        payload.addElement("get")["url"] = url
        return result_reply(iq, payload)

    def url(self, slot_id, name):
        from urllib.parse import quote
        return f"{self.base_url()}/upload/{slot_id}/{quote(name)}"

    def claim(self, slot_id):
        """The pending slot ``slot_id`` if still valid (removed from the pending set)."""
        slot = self.pending.pop(slot_id, None)
        if slot is None or slot.expires < time.time():
            return None
        return slot
