"""Offline messages (XEP-0160, RFC 6121 §8.5.2.1.1).

The router calls :meth:`OfflineMessages.store` for a chat/normal message to
a local account that has no available resource with non-negative priority;
c2s calls :meth:`OfflineMessages.deliver` when a session sends its initial
presence. Stored messages go to that session with a ``urn:xmpp:delay``
stamp from the server domain, then are deleted (delivery before deletion:
a crash in between means a duplicate, never a loss).

Policy:
* only existing accounts get storage (unknown users: service-unavailable);
* at most ``cfg.max_offline_messages`` per account (0 disables storage),
  then ``service-unavailable`` (XEP-0160 §3);
* messages with no content worth keeping (only chat states or hints) and
  messages with a ``<no-store/>`` / ``<no-permanent-store/>`` hint
  (XEP-0334) are dropped silently, as RFC 6121 allows;
* a database failure answers ``internal-server-error`` (or
  ``resource-constraint`` when the disk is full) and the server goes on.

Order (RFC 6120 §10.1): the stored messages are read on the writer thread,
and a live message routed to the session meanwhile would overtake them. So
from the initial presence until the stored ones are written, what is sent to
that session is held back (at most ``HOLD_MAX`` stanzas) and follows them.
The hold is a ``stanza-sending`` hook registered only while a read is pending.
"""
from twisted.internet import defer
from twisted.logger import Logger

from xmppd.storage.db import error_condition
from xmppd.wire.serialize import parse_stanza, xep0082

NS_CLIENT = "jabber:client"
NS_DELAY = "urn:xmpp:delay"
NS_HINTS = "urn:xmpp:hints"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
_NO_STORE = frozenset(("no-store", "no-permanent-store"))
_CONTENTLESS = frozenset((NS_CHATSTATES, NS_HINTS))

log = Logger(namespace="xmppd.offline")

HOLD_MAX = 1000      # stanzas held for one session while its stored messages are read


def worth_storing(el):
    """False for hints-only/chat-state-only messages and for explicit no-store hints."""
    content = False
    for child in el.elements():
        if child.uri == NS_HINTS and child.name in _NO_STORE:
            return False
        if child.uri not in _CONTENTLESS:
            content = True
    return content


class OfflineMessages:
    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.offline = store.offline
        self.domain = cfg.domain
        self.holding = {}            # session -> [stanza bytes] while its stored messages are read

    def store(self, el, j, t):
        """Keep a message for the account of JID ``j``; True if it was handled (stored, dropped or bounced)."""
        if t not in ("chat", "normal"):
            return False
        username = j.user
        limit = self.cfg.max_offline_messages
        if limit <= 0 or not self.router.user_exists(username):
            return False
        if not worth_storing(el):
            return True
        # Stored on the writer thread; the sender hears only of a failure (a bounce, later).
        d = defer.maybeDeferred(self.offline.store, username, el.toXml(defaultUri=NS_CLIENT), limit)

        def stored(ok):
            if not ok:
                self.router.bounce(el, "service-unavailable", sender=j.userhost(),
                                   text="the recipient's offline message storage is full")

        def failed(f):
            log.failure("offline: storing a message for {user} failed", f, user=username)
            self.router.bounce(el, error_condition(f.value), sender=j.userhost())

        d.addCallbacks(stored, failed)
        d.addErrback(lambda f: log.failure("offline: bouncing a message failed", f))
        return True

    def deliver(self, session):
        """Send the stored messages of ``session``'s account to it (initial presence, priority >= 0).

        The read runs behind every store queued before it (same writer
        thread); returns a Deferred firing with the number delivered.
        """
        if session.priority < 0:
            return defer.succeed(0)
        username = session.bare.split("@", 1)[0]
        self._hold(session)
        d = defer.maybeDeferred(self.offline.peek, username)
        d.addCallback(self._send, session, username)
        d.addErrback(self._deliver_failed, username)
        d.addBoth(self._release, session)
        return d

    # -- keeping the order: live stanzas wait for the stored ones ---------------------

    def _hold(self, session):
        if session in self.holding:
            return
        if not self.holding:
            session.events.add("stanza-sending", self._holding, priority=300)  # before CSI, SM
        self.holding[session] = []

    def _holding(self, session, data):
        held = self.holding.get(session)
        if held is None:
            return None
        if len(held) >= HOLD_MAX:
            # a flood: give up the order against the stored ones, keep it among the live ones
            self.holding[session] = None
            for old in held:
                session.write_stanza(old)
            return None
        held.append(data)
        return True

    def _release(self, result, session):
        held = self.holding.pop(session, None)
        if not self.holding:
            session.events.remove("stanza-sending", self._holding)
        if held:
            if session.ended:
                self._reroute(session, held)
            else:
                for data in held:
                    session.write_stanza(data)
        return result

    def _reroute(self, session, held):
        """The session ended while its stored messages were read: what it was sent meanwhile
        goes where a message to an unavailable resource goes (RFC 6121 §8.5.3.2)."""
        from xmppd.jid import parse_or_none
        bare = parse_or_none(session.bare)
        for data in held:
            try:
                el = parse_stanza(data.decode("utf-8"))
                t = el.getAttribute("type") or "normal"
                if el.name == "message" and t in ("normal", "chat") and bare is not None:
                    self.router._message_to_bare(el, bare, t)
            except Exception:
                log.failure("offline: re-routing a message held for {jid} failed", jid=session.full)

    def _deliver_failed(self, f, username):
        log.failure("offline: delivering messages of {user} failed", f, user=username)
        return 0

    def _send(self, rows, session, username):
        if not rows or not getattr(session, "bound", True) or not session.available:
            return 0     # gone meanwhile: they stay stored for the next login
        held, self.holding[session] = self.holding.get(session), None   # ours go out now
        last = None
        for msg_id, stamp, text in rows:
            try:
                el = parse_stanza(text)
            except Exception:
                log.failure("offline: dropping unreadable stored message {id} of {user}",
                            id=msg_id, user=username)
                last = msg_id
                continue
            delay = el.addElement((NS_DELAY, "delay"), content="Offline Storage")
            delay["from"] = self.domain
            delay["stamp"] = xep0082(stamp)
            session.deliver(el)
            last = msg_id
        self.holding[session] = held
        d = defer.maybeDeferred(self.offline.remove, username, last)
        d.addErrback(lambda f: log.failure("offline: removing delivered messages of {user} failed "
                                           "(they will be delivered again)", f, user=username))
        return len(rows)


def install(router, cfg, store):
    """Hook offline storage into the router (``router.offline``); c2s calls ``deliver``."""
    svc = OfflineMessages(router, cfg, store)
    router.offline = svc
    return svc
