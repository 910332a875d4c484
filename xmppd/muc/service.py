"""The MUC component (XEP-0045) at ``cfg.muc_domain``.

``make_component(router, cfg, store)`` returns a wokkel ``InternalComponent``
holding :class:`MUCService` (rooms, dispatch), wokkel's ``DiscoHandler``
(service-level disco, fed by ``getDiscoInfo``/``getDiscoItems`` of the
handlers) and ``FallbackHandler`` (service-unavailable for unknown IQs).

Dispatch: presence and message stanzas, IQs to occupants and the room
protocols (muc#admin, muc#owner, register, room disco) are handled by a
plain dict/if dispatch that replaces the pipe's ``dispatch`` (no xpath on
the hot path, GUIDE §7.6); anything else falls through to the original
xpath dispatcher (DiscoHandler for the service, ad-hoc handlers,
FallbackHandler).
"""
from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish.domish import Element
from wokkel import component, data_form, disco, generic
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xmppd import jid as jidlib
from xmppd.muc import admin, owner, register
from xmppd.muc.errors import error_reply, stanza_error
from xmppd.muc.features import load_features
from xmppd.muc.hooks import Event, Hooks
from xmppd.muc.room import NS_ADMIN, NS_MUC, NS_OWNER, NS_USER, Room, core
from xmppd.storage.db import error_condition
from xmppd.wire.redact import for_trace

log = Logger()

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_REGISTER = "jabber:iq:register"
# Stanzas a room queues while waiting for a commit (a stalled disk must not eat memory).
MAX_HELD = 1000


@implementer(disco.IDisco)
class MUCService(XMPPHandler):
    """Rooms by bare JID, creation, persistence, and stanza dispatch."""

    def __init__(self, router, cfg, store):
        super().__init__()
        self.router = router
        self.cfg = cfg
        self.domain = cfg.muc_domain
        self.store = store
        self.rooms = {}
        self.admins = set()
        for a in cfg.admins or ():
            j = jidlib.parse_or_none(a)
            if j is not None:
                self.admins.add(j.userhost())
        self.hooks = Hooks()
        self.features = [core] + load_features()
        self.default_config = {}
        for f in self.features:
            self.default_config.update(f.defaults)
            f.register(self.hooks)
        self.default_config["public"] = bool(cfg.muc_room_default_public)
        self.room_store = getattr(store, "rooms", None) if store is not None else None
        self._orig_dispatch = None
        self._after = []
        self._commits = None   # commit Deferreds of the room stanza being handled
        self._held = {}        # room jid -> stanzas waiting for that room's commits
        self.outbox = None     # while not None, rooms queue what they send (see hold_broadcasts)
        self.service_features = []   # namespaces feature modules add to the service's disco#info
        self._load_rooms()
        for f in self.features:
            if f.install:
                f.install(self)

    # -- persistence -------------------------------------------------------
    def _load_rooms(self):
        rs = self.room_store
        if rs is None or not hasattr(rs, "load_all"):
            return
        for rec in rs.load_all():
            room = Room(self, rec["jid"], rec["config"])
            for bare, (aff, data) in rec["affiliations"].items():
                room.affiliations[bare] = aff
                if data:
                    room.aff_data[bare] = data
            room.config["locked"] = False
            room._stored = True
            self.rooms[room.jid] = room

    def save_room(self, room):
        """Queue the room's state for storage; the commit's Deferred, or None if nothing to store.

        The write runs on the storage's writer thread. While a room stanza is
        being handled, the Deferred is also collected, and the reply to that
        stanza waits for it (see ``_hold``); a failure then becomes a
        StanzaError (resource-constraint for a full disk, else
        internal-server-error) for the requester. The in-memory room is not
        rolled back here: the next successful save stores everything.
        """
        rs = self.room_store
        if rs is None or not hasattr(rs, "save_room"):
            return None
        try:
            if room.config.get("persistent") and not room.destroying:
                d = rs.save_room(room.jid, room.config, room.affiliations, room.aff_data)
                room._stored = True
            elif room._stored:
                d = rs.delete_room(room.jid)
                room._stored = False
            else:
                return None
        except Exception:
            log.failure("could not save room {room}", room=room.jid)
            raise stanza_error("internal-server-error", "wait", "The room could not be saved")
        return self._track(d, room.jid, "saved")

    def _track(self, d, room_jid, what):
        if not isinstance(d, defer.Deferred):
            d = defer.succeed(d)

        def failed(f):
            log.failure("could not store room {room}", f, room=room_jid)
            return defer.fail(stanza_error(error_condition(f.value), "wait",
                                           f"The room could not be {what}"))

        d.addErrback(failed)
        if self._commits is not None:
            self._commits.append(d)
        else:
            d.addErrback(lambda f: None)    # nobody to tell: logged above
        return d

    def forget_room(self, room, delete=False):
        if self.rooms.get(room.jid) is room:
            del self.rooms[room.jid]
        if delete and room._stored and self.room_store is not None:
            room._stored = False
            try:
                d = self.room_store.delete_room(room.jid)
            except Exception:
                log.failure("could not delete stored room {room}", room=room.jid)
                return
            self._track(d, room.jid, "deleted")

    def _hold(self, room_jid, commits, done):
        """Call ``done(failure_or_None)`` once ``commits`` fired; queue the room's stanzas meanwhile.

        The room's in-memory state changed already; holding its later stanzas
        until the reply is sent keeps every stanza the room emits in the
        order it would have without the wait. Other rooms are not affected.
        """
        self._held.setdefault(room_jid, [])

        def fire(results):
            failure = next((r for ok, r in results if not ok), None)
            try:
                done(failure)
            except Exception:
                log.failure("MUC: answering after the commit for {room} failed", room=room_jid)
            self._release(room_jid)

        defer.DeferredList(commits, consumeErrors=True).addCallback(fire)

    def _release(self, room_jid):
        queue = self._held.pop(room_jid, None) or []
        while queue:
            self._dispatch(queue.pop(0))
            if room_jid in self._held:        # held again: the rest waits behind it
                self._held[room_jid] = queue + self._held[room_jid]
                return

    def room_maybe_empty(self, room):
        if room.occupants or room.destroying:
            return
        if not room.config.get("persistent"):
            room.destroying = True
            self.hooks.fire("muc-room-destroyed", Event(room=room, reason=None, alternate=None))
            self.forget_room(room, delete=True)

    def shutdown(self):
        """Tell every occupant the service is going away (status 332, §11.2)."""
        if self._orig_dispatch is None:
            return                        # never started (e.g. an in-process test build)
        for room in list(self.rooms.values()):
            for occ in list(room.occupants.values()):
                p = Element((None, "presence"))
                p["from"] = occ.room_jid
                p["type"] = "unavailable"
                x = p.addElement((NS_USER, "x"))
                item = x.addElement("item")
                item["affiliation"] = room.get_affiliation(occ.bare)
                item["role"] = "none"
                for code in ("110", "332"):
                    x.addElement("status")["code"] = code
                try:
                    self.router.route_many(p, list(occ.sessions))
                except Exception:
                    log.failure("could not notify {jid} of the shutdown", jid=occ.jid)

    # -- wiring --------------------------------------------------------------
    def connectionInitialized(self):
        xs = self.xmlstream
        self._orig_dispatch = xs.dispatch
        xs.dispatch = self._dispatch

    def _dispatch(self, obj, event=None):
        if event is not None or not hasattr(obj, "name"):
            return self._orig_dispatch(obj, event)
        try:
            if self.handle(obj):
                return
        except Exception:
            log.failure("MUC dispatch failed for {name} from {frm} to {to}: {xml}", name=obj.name,
                        frm=obj.getAttribute("from"), to=obj.getAttribute("to"),
                        xml=for_trace(obj.toXml())[:2000])
            if obj.name == "iq" and obj.getAttribute("type") in ("get", "set"):
                self.send(error_reply(obj, "internal-server-error", "cancel"))
            return
        return self._orig_dispatch(obj, event)

    def send(self, element):
        self.router.route(element)

    # -- dispatch ------------------------------------------------------------
    def handle(self, stanza):
        """Handle one stanza; return False to pass it to the xpath dispatcher."""
        name = stanza.name
        frm = stanza.getAttribute("from")
        to = stanza.getAttribute("to")
        if not frm or not to:
            return True
        to_j = jidlib.parse_or_none(to)
        stype = stanza.getAttribute("type")
        if to_j is None:
            if stype != "error":
                self.send(error_reply(stanza, "jid-malformed", "modify", by=self.domain))
            return True
        if to_j.user is None:
            return self.handle_service(stanza, name, stype, to_j)
        room_jid = to_j.userhost()
        held = self._held.get(room_jid)
        if held is not None:
            if len(held) < MAX_HELD or (name == "presence" and stype == "unavailable"):
                held.append(stanza)     # (a leave is never dropped: no ghost occupants)
            elif stype != "error":
                self.send(error_reply(stanza, "resource-constraint", "wait", by=room_jid,
                                      text="The room is busy storing a change"))
            return True
        outer, self._commits = self._commits, []
        try:
            return self._handle_room_stanza(stanza, name, stype, frm, room_jid, to_j.resource)
        finally:
            commits, self._commits = self._commits, outer
            if commits:     # a presence or message changed stored state
                room = self.rooms.get(room_jid)
                self._hold(room_jid, commits,
                           lambda f: self._stanza_failed(stanza, room, f) if f is not None else None)

    def _stanza_failed(self, stanza, room, failure):
        if stanza.getAttribute("type") == "error" or stanza.name == "iq":
            return      # IQs are answered by handle_room_iq
        e = failure.value if isinstance(failure.value, StanzaError) else \
            stanza_error("internal-server-error", "wait")
        if room is not None:
            room.send_error(stanza, e)
        else:
            self.send(error_reply(stanza, e))

    def _handle_room_stanza(self, stanza, name, stype, frm, room_jid, nick):
        room = self.rooms.get(room_jid)
        if room is not None and room.config.get("tombstone"):
            # a destroyed persistent room (features/tombstones.py): gone, or lifted
            if self.hooks.fire("muc-tombstone-stanza", Event(room=room, stanza=stanza, jid=frm)):
                return True
            room = self.rooms.get(room_jid)
        if room is None:
            if name == "presence" and stype is None and nick is not None \
                    and _child(stanza, NS_MUC, "x") is not None:
                return self.create_room(stanza, frm, room_jid, nick)
            if name == "presence" and stype is None and nick is None:
                self.send(error_reply(stanza, "jid-malformed", "modify", by=room_jid,
                                      text="A nickname is required to join"))
            elif stype != "error" and not (name == "presence" and stype == "unavailable"):
                self.send(error_reply(stanza, "item-not-found", "cancel", by=self.domain))
            return True
        if name == "presence":
            room.handle_presence(stanza, frm, nick)
        elif name == "message":
            room.handle_message(stanza, frm, nick)
        elif name == "iq":
            if nick is not None:
                room.handle_iq_to_occupant(stanza, frm, nick)
            else:
                return self.handle_room_iq(room, stanza, frm, stype)
        return True

    def create_room(self, stanza, frm, room_jid, nick):
        """A join to a missing room creates it (§10.1.1); the creator becomes owner."""
        creator = jidlib.parse(frm).userhost()
        limit = getattr(self.cfg, "muc_max_rooms_per_creator", 0) or 0
        if limit and creator not in self.admins and \
                sum(1 for r in self.rooms.values() if r.creator == creator) >= limit:
            self.send(error_reply(stanza, "resource-constraint", "wait", by=self.domain,
                                  text="You have created too many rooms"))
            return True
        room = Room(self, room_jid)
        room.creator = creator
        ev = Event(room=room, stanza=stanza, jid=frm)
        try:
            if self.hooks.fire("muc-room-pre-create", ev):
                return True
        except StanzaError as e:
            self.send(error_reply(stanza, e, by=room_jid))
            return True
        # the creator is the first owner
        room.affiliations[creator] = "owner"
        self.rooms[room_jid] = room
        if not room.join(stanza, frm, nick, is_new_room=True):
            self.forget_room(room)
            return True
        self.hooks.fire("muc-room-created", Event(room=room, stanza=stanza, jid=frm))
        log.info("room {room} created by {jid}", room=room_jid, jid=frm)
        return True

    def handle_room_iq(self, room, stanza, frm, stype):
        """IQ get/set to a bare room JID: every one is answered (result or error)."""
        if stype not in ("get", "set"):
            return True          # results/errors to the room itself: nothing waits for them
        q = stanza.firstChildElement()
        if q is None:
            self.send(error_reply(stanza, "bad-request", "modify"))
            return True
        uri = q.uri
        box = None
        try:
            if uri == NS_ADMIN and q.name == "query":
                result = admin.handle(room, stanza, q, frm, stype)
            elif uri == NS_OWNER and q.name == "query":
                result = owner.handle(room, stanza, q, frm, stype)
            elif uri == NS_REGISTER and q.name == "query":
                result = register.handle(room, stanza, q, frm, stype)
            elif uri == NS_DISCO_INFO and q.name == "query" and stype == "get":
                result = self.room_disco_info(room, q, frm)
            elif uri == NS_DISCO_ITEMS and q.name == "query" and stype == "get":
                result = self.room_disco_items(room, q, frm)
            else:
                ev = Event(room=room, stanza=stanza, query=q, jid=frm)
                result = self.hooks.fire(f"muc-room-iq/{uri}", ev)
                if result is None:
                    raise stanza_error("service-unavailable", "cancel")
        except StanzaError as e:
            failed = e
        else:
            failed = None
        finally:
            after, self._after = self._after, []
            box, self.outbox = self.outbox, None
        if failed is not None:
            self.send(error_reply(stanza, failed))
            _flush(box)          # whatever did change before the refusal is still announced
            return True
        commits, self._commits = self._commits, []
        if commits:
            # a change the client is told about: the reply waits for its commit
            def done(failure):
                if failure is not None:
                    e = failure.value if isinstance(failure.value, StanzaError) else \
                        stanza_error("internal-server-error", "wait")
                    self.send(error_reply(stanza, e))
                    _flush(box)  # not rolled back in memory: occupants see the real state
                    return
                self._reply(stanza, result, after, box)

            self._hold(room.jid, commits, done)
            return True
        self._reply(stanza, result, after, box)
        return True

    def _reply(self, stanza, result, after, box=None):
        if box:
            _flush(box, early=True)
        if result is not True:   # True: the handler replied itself
            reply = _result(stanza)
            if result is not None and result is not False:
                reply.addChild(result)
            self.send(reply)
        if box:
            _flush(box, early=False)
        for fn in after:
            fn()

    def hold_broadcasts(self):
        """Queue what the room sends until the current IQ is answered.

        XEP-0045 §8.2-8.4, §9.1, §9.6-9.7: the moderator's result comes before
        the presence broadcast of the change; only a kicked or banned
        occupant's own presence (``route(..., early=True)``) goes first.
        """
        if self.outbox is None:
            self.outbox = []

    def after_reply(self, fn):
        """Run ``fn`` once the current IQ has been answered (e.g. status-code messages)."""
        self._after.append(fn)

    def handle_service(self, stanza, name, stype, to_j):
        """Stanzas to the service domain itself; IQs go on to the xpath handlers."""
        if to_j.resource is not None:
            if stype != "error" and not (name == "presence" and stype == "unavailable"):
                self.send(error_reply(stanza, "item-not-found" if name != "iq" else
                                      "service-unavailable", "cancel"))
            return True
        if name == "iq":
            return False          # DiscoHandler, ad-hoc commands, FallbackHandler
        if name == "message":
            if stype != "error":
                ev = Event(stanza=stanza, service=self)
                if not self.hooks.fire("muc-service-message", ev):
                    self.send(error_reply(stanza, "service-unavailable", "cancel"))
            return True
        # presence to the service itself: nothing to track; subscriptions are refused
        if stype == "subscribe":
            self.send(error_reply(stanza, "service-unavailable", "cancel"))
        return True

    # -- room disco (XEP-0045 §6.4, XEP-0128) ---------------------------------
    def room_disco_info(self, room, q, frm):
        node = q.getAttribute("node")
        result = Element((NS_DISCO_INFO, "query"))
        if node:
            result["node"] = node
            ev = Event(room=room, node=node, requestor=frm, result=[])
            handled = self.hooks.fire(f"muc-disco#info/{node}", ev)
            if handled is None and not self.hooks.has(f"muc-disco#info/{node}"):
                raise stanza_error("item-not-found", "cancel")
            for el in ev.result:
                result.addChild(el)
            return result
        ev = Event(room=room, features={NS_MUC}, form=[], identity_name=None, requestor=frm)
        self.hooks.fire("muc-disco#info", ev)
        ident = result.addElement("identity")
        ident["category"] = "conference"
        ident["type"] = "text"
        name = ev.identity_name if ev.identity_name is not None else (room.config.get("name") or None)
        if name:
            ident["name"] = name
        for f in sorted(ev.features):
            result.addElement("feature")["var"] = f
        form = data_form.Form("result", formNamespace="http://jabber.org/protocol/muc#roominfo")
        for field in ev.form:
            form.addField(field)
        result.addChild(form.toElement())
        return result

    def room_disco_items(self, room, q, frm):
        result = Element((NS_DISCO_ITEMS, "query"))
        if q.getAttribute("node"):
            result["node"] = q["node"]
            return result
        # §6.5 lets a room list its occupants here; like Prosody we do not, so that
        # semi-anonymous and members-only rooms never leak who is inside.
        return result

    # -- service disco (IDisco, via wokkel's DiscoHandler) ---------------------
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if target.user is not None or nodeIdentifier:
            return []
        return [disco.DiscoIdentity("conference", "text", "Chatrooms"),
                disco.DiscoFeature(NS_DISCO_INFO),
                disco.DiscoFeature(NS_DISCO_ITEMS),
                disco.DiscoFeature(NS_MUC)] + [disco.DiscoFeature(f) for f in self.service_features]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        if target.user is not None or nodeIdentifier:
            return []
        items = []
        for jid_, room in sorted(self.rooms.items()):
            if room.config.get("public") and not room.config.get("locked"):
                items.append(disco.DiscoItem(jidlib.parse(jid_), name=room.config.get("name") or None))
        return items


def _flush(box, early=None):
    """Send the queued room output: the ``early`` entries, the others, or (None) all."""
    for is_early, fn, args in box or ():
        if early is None or is_early == early:
            fn(*args)


def _child(stanza, uri, name):
    for c in stanza.elements():
        if c.name == name and c.uri == uri:
            return c
    return None


def _result(stanza):
    reply = Element((None, "iq"))
    reply["type"] = "result"
    reply["to"] = stanza["from"]
    reply["from"] = stanza["to"]
    if stanza.getAttribute("id"):
        reply["id"] = stanza["id"]
    return reply


def make_component(router, cfg, store):
    """The MUC built in: a wokkel InternalComponent on xmppd's router."""
    return _assemble(component.InternalComponent(router, cfg.muc_domain), router, cfg, store)


def make_external(cfg, store, host, port, secret):
    """The same MUC as an XEP-0114 component of the server at ``host:port`` (``xmppd-muc``).

    :class:`xmppd.component.link.ComponentLink` stands in for the router;
    it is added after the MUC handler so it sees the stream first.
    """
    from xmppd.component.link import ComponentLink, MUCComponent
    link = ComponentLink()
    comp = MUCComponent(host, port, cfg.muc_domain, secret)
    return _assemble(comp, link, cfg, store, link)


def _assemble(comp, router, cfg, store, link=None):
    svc = MUCService(router, cfg, store)
    # Registered now, i.e. before the runner's own "stop the services" trigger, so the
    # 332 presences go out while the c2s streams are still open (§11.2).
    from twisted.internet import reactor
    reactor.addSystemEventTrigger("before", "shutdown", svc.shutdown)
    svc.setHandlerParent(comp)
    if link is not None:
        link.setHandlerParent(comp)
    disco.DiscoHandler().setHandlerParent(comp)
    generic.FallbackHandler().setHandlerParent(comp)
    comp.muc = svc
    return comp
