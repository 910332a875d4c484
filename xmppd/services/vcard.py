"""vCards (XEP-0054), the avatar hash in presence (XEP-0153), vCard/PEP avatar conversion (XEP-0398).

One source of truth for the avatar: the account's XEP-0084 PEP nodes
(``urn:xmpp:avatar:data`` and ``urn:xmpp:avatar:metadata``). The stored
vCard keeps everything else.

* vCard set with a PHOTO/BINVAL publishes the image to both avatar nodes
  (item id = SHA-1 of the image, nodes created with open access as
  Prosody's vcard_legacy does); a vCard set without PHOTO disables a
  current avatar (empty metadata, XEP-0084 §4.2). A PHOTO/EXTVAL is kept in
  the vCard as it is (no image to hash).
* vCard get composes the stored vCard with the PHOTO from the PEP avatar
  (if the requester may read those nodes), so an avatar published over PEP
  (XEP-0084) shows up in the vCard (XEP-0398 §3).
* Every available presence a local client sends (undirected, directed,
  to MUC rooms) gets ``<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x>``,
  or an empty ``<photo/>`` with no avatar (XEP-0153 §4.1, XEP-0398 §4). A
  client's own empty ``<photo/>`` is left alone (XEP-0398 §4; XEP-0153 §4.3: a
  client may still be loading its vCard); a client's different non-empty
  hash is replaced by the server's when the account has a PEP avatar.

Rules where the XEP is explicit (and Prosody 0.12 differs):
* XEP-0054 §3.3: a vCard get for an account without one is
  ``service-unavailable``, the same answer as for a non-existent account
  (no harvesting). The owner asking for their own empty vCard gets an empty
  ``<vCard/>`` (they know they exist; clients ask this at login).
* XEP-0054 §3.2: only the owner may set; others get ``forbidden``.

Limit: ``max_vcard_size`` bytes of serialised vCard (``not-acceptable``).
"""
import base64
import binascii
import hashlib
import uuid
from collections import OrderedDict

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xmppd import pubsub

NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"
NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_META = "urn:xmpp:avatar:metadata"
NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
HASH_CACHE_SIZE = 10000
AVATAR_NODE_OPTIONS = {"access_model": "open", "max_items": 1}

log = Logger(namespace="xmppd.vcard")


def _bare(jid):
    return jid.split("/", 1)[0]


def _child(el, name, uri=NS_VCARD):
    for c in el.elements():
        if c.name == name and (c.uri == uri or c.uri is None):
            return c
    return None


def _info(meta_payload):
    """The first <info/> of a metadata payload, or None (avatar disabled)."""
    for c in meta_payload.elements():
        if c.name == "info" and c.uri == NS_AVATAR_META:
            return c
    return None


class VCards:
    def __init__(self, router, cfg, store, pep):
        self.router = router
        self.cfg = cfg
        self.store = store           # AsyncPersonalStore
        self.pep = pep
        self.domain = cfg.domain
        self.hashes = OrderedDict()  # username -> avatar hash ('' = none), bounded

    def install(self):
        r = self.router
        r.iq_handlers[NS_VCARD] = self.iq
        r.server_features.append(NS_VCARD)
        r.account_features.extend((NS_VCARD, NS_CONVERSION))
        r.hooks.add("client/presence", self.on_presence, priority=10)
        r.hooks.add("user-deleted", lambda ev: self.hashes.pop(ev.username, None) and None)
        self.pep.listeners.append(self.on_pep_change)
        return self

    # -- XEP-0153: the hash in presence ----------------------------------------

    def avatar_hash(self, username):
        h = self.hashes.get(username)
        if h is not None:
            self.hashes.move_to_end(username)
            return h
        h = ""
        try:
            rows = self.store.sync.items(username, NS_AVATAR_META, None, 1)
            if rows:
                info = _info(pubsub.parse_payload(rows[0][2]))
                if info is not None:
                    h = rows[0][0]
        except Exception:
            log.failure("vcard: reading the avatar hash of {user} failed", user=username)
            return ""
        self._remember(username, h)
        return h

    def _remember(self, username, h):
        self.hashes[username] = h
        self.hashes.move_to_end(username)
        while len(self.hashes) > HASH_CACHE_SIZE:
            self.hashes.popitem(last=False)

    def on_presence(self, event):
        el = event.stanza
        if el.attributes.get("type"):
            return None
        x = None
        for c in el.elements():
            if c.name == "x" and c.uri == NS_VCARD_UPDATE:
                x = c
                break
        if x is None:
            x = el.addElement((NS_VCARD_UPDATE, "x"))
        else:
            photo = _child(x, "photo", NS_VCARD_UPDATE)
            if photo is not None:
                # XEP-0398 §4: an empty <photo/> is the client's business; a different hash
                # may be overwritten (ours follows the PEP avatar, the client's may be stale)
                given = str(photo).strip()
                if given:
                    h = self.avatar_hash(event.session.bare.split("@", 1)[0])
                    if h and h != given:
                        photo.children = [h]
                return None
        h = self.avatar_hash(event.session.bare.split("@", 1)[0])
        if h:
            x.addElement("photo", content=h)
        else:
            x.addElement("photo")
        return None

    def on_pep_change(self, username, node, kind, item_id, payload):
        if node != NS_AVATAR_META:
            return
        if kind == "publish":
            self._remember(username, item_id if _info(payload) is not None else "")
        else:
            self.hashes.pop(username, None)

    # -- XEP-0054 get/set ---------------------------------------------------------

    def iq(self, iq, child, target):
        if child.name != "vCard":
            raise StanzaError("bad-request", type="modify")
        requester = _bare(iq.getAttribute("from") or "")
        if target is None:
            raise StanzaError("service-unavailable", type="cancel")
        if iq.getAttribute("type") == "get":
            return self._get(target, requester)
        if requester != target:
            raise StanzaError("forbidden", type="auth")
        return self._set(target, child)

    def _get(self, target, requester):
        username = target.split("@", 1)[0]
        state = {}
        d = self.store.get_vcard(username)

        def got_vcard(text):
            state["vcard"] = text
            return self._photo(username, requester)

        def compose(photo):
            text = state["vcard"]
            if text is None and photo is None:
                if requester == target:
                    return domish.Element((NS_VCARD, "vCard"))
                raise StanzaError("service-unavailable", type="cancel")
            vcard = pubsub.parse_payload(text) if text is not None else domish.Element((NS_VCARD, "vCard"))
            if photo is not None:
                vcard.children = [c for c in vcard.children
                                  if not (isinstance(c, domish.Element) and c.name == "PHOTO")]
                vcard.addChild(photo)
            return vcard
        return d.addCallback(got_vcard).addCallback(compose)

    def _photo(self, username, requester):
        """Deferred PHOTO element built from the PEP avatar the requester may read, or None."""
        d = self.pep.get_items(username, NS_AVATAR_META, requester, None, 1)
        state = {}

        def got_meta(rows):
            if not rows:
                return None
            info = _info(pubsub.parse_payload(rows[0][2]))
            if info is None:
                return None
            state["info"] = info
            if info.getAttribute("url") and not info.getAttribute("id"):
                return None
            return self.pep.get_items(username, NS_AVATAR_DATA, requester, [info.getAttribute("id") or rows[0][0]])

        def got_data(rows):
            info = state.get("info")
            if info is None:
                return None
            photo = domish.Element((NS_VCARD, "PHOTO"))
            if info.getAttribute("type"):
                photo.addElement("TYPE", content=info["type"])
            if rows:
                photo.addElement("BINVAL", content=str(pubsub.parse_payload(rows[0][2])))
            elif info.getAttribute("url"):
                photo.addElement("EXTVAL", content=info["url"])
            else:
                return None
            return photo

        def none(f):
            f.trap(StanzaError)     # no avatar nodes, or not readable by the requester
            return None
        return d.addCallback(got_meta).addCallback(got_data).addErrback(none)

    def _set(self, target, vcard):
        username = target.split("@", 1)[0]
        if len(vcard.toXml().encode("utf-8")) > self.cfg.max_vcard_size:
            raise StanzaError("not-acceptable", type="modify",
                              text=f"vCards are limited to {self.cfg.max_vcard_size} bytes")
        photo = _child(vcard, "PHOTO")
        avatar = None
        if photo is not None:
            binval = _child(photo, "BINVAL")
            if binval is not None:
                b64 = "".join(str(binval).split())
                try:
                    data = base64.b64decode(b64, validate=True)
                except (binascii.Error, ValueError):
                    raise StanzaError("bad-request", type="modify", text="PHOTO/BINVAL is not base64")
                mtype = _child(photo, "TYPE")
                avatar = (data, b64, str(mtype).strip() if mtype is not None else "")
                vcard.children = [c for c in vcard.children if c is not photo]
        stored = vcard.toXml()
        d = self._avatar_from_vcard(username, avatar, photo is None)
        d.addCallback(lambda _: self.store.set_vcard(username, stored))
        return d.addCallback(lambda _: None)

    def _avatar_from_vcard(self, username, avatar, no_photo):
        """Publish (or disable) the PEP avatar to match a vCard PHOTO (XEP-0398 §5)."""
        if avatar is None:
            if no_photo and self.avatar_hash(username):
                meta = domish.Element((NS_AVATAR_META, "metadata"))
                return self.pep.publish_item(username, NS_AVATAR_META, uuid.uuid4().hex, meta,
                                             AVATAR_NODE_OPTIONS)
            return defer.succeed(None)
        data, b64, mtype = avatar
        if not data:
            return defer.succeed(None)
        h = hashlib.sha1(data).hexdigest()
        data_el = domish.Element((NS_AVATAR_DATA, "data"))
        data_el.addContent(b64)
        meta = domish.Element((NS_AVATAR_META, "metadata"))
        info = meta.addElement("info")
        info["id"], info["bytes"], info["type"] = h, str(len(data)), mtype or "image/png"
        d = self.pep.publish_item(username, NS_AVATAR_DATA, h, data_el, AVATAR_NODE_OPTIONS)
        d.addCallback(lambda _: self.pep.publish_item(username, NS_AVATAR_META, h, meta,
                                                      AVATAR_NODE_OPTIONS))
        return d


def install(router, cfg, store, pep):
    return VCards(router, cfg, store.personal, pep).install()
