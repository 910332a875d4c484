"""The component side of XEP-0114: the MUC's router when it runs as ``xmppd-muc``.

Built in, the MUC sends through xmppd's :class:`xmppd.router.Router`
(``route``, ``route_many`` and the session table for cached bytes). As an
external component it gets a :class:`ComponentLink` with the same small
interface, so the room code does not know which it has: every stanza goes
over the one component stream to the host server (xmppd, Prosody,
ejabberd), which delivers it. ``route_many`` keeps the built-in fast path's
shape: the stanza is serialised once and each recipient gets
head + escaped(to) + tail written to the stream.

What only the host server knows is not available here: whether a JID is a
local account (invites to unknown users are forwarded, not refused with
item-not-found) and whether a recipient is still online (the host server
drops or bounces; bounces come back as errors and the room handles them as
it does for the built-in service).

The connection is wokkel's ``Component`` (handshake by Twisted's
``ComponentInitiatingInitializer``), reconnecting with a capped back-off;
incoming stanzas are moved into ``jabber:client`` before the MUC sees them
(:func:`xmppd.component.rehome`) and the parser is hardened like ours.
"""
import os

from twisted.internet import reactor
from twisted.words.protocols.jabber import xmlstream
from twisted.logger import Logger
from twisted.words.xish import domish
from wokkel import component
from wokkel.subprotocols import XMPPHandler

from xmppd.component import rehome
from xmppd.stream import limits
from xmppd.stream.serialize import to_bytes

log = Logger(namespace="xmppd.muc.link")
MAX_RECONNECT_DELAY = 10.0     # seconds between attempts once the host server is gone


def _reject_restricted(*args):
    raise domish.ParserError("restricted-xml")


class _RemoteSession:
    """What the room's cached-bytes path needs of a session: ``write_patched``."""

    __slots__ = ("link", "escaped")

    def __init__(self, link, to):
        self.link = link
        self.escaped = domish.escapeToXml(to, 1).encode("utf-8")

    def write_patched(self, head, tail):
        self.link.write(head + self.escaped + tail)


class _RemoteSessions:
    """The router's session table as seen from a component: every JID may be reachable."""

    bare = frozenset()          # the host server's accounts are not known here

    def __init__(self, link):
        self.link = link
        self.full = self

    def get(self, to):
        return _RemoteSession(self.link, to) if self.link.connected else None


class ComponentLink(XMPPHandler):
    """Router interface for the MUC over a component stream (add it *after* the MUC handler)."""

    domain = None

    def __init__(self):
        super().__init__()
        self.sessions = _RemoteSessions(self)
        self.transport = None
        self.dropped = 0

    @property
    def connected(self):
        return self.transport is not None

    def user_exists(self, username):
        return False

    # -- stream events (XMPPHandler) --------------------------------------------
    def connectionMade(self):
        p = self.xmlstream.stream.parser
        p.buffer_text = True
        p.StartDoctypeDeclHandler = _reject_restricted
        p.EntityDeclHandler = _reject_restricted
        p.CommentHandler = _reject_restricted
        p.ProcessingInstructionHandler = _reject_restricted
        limits.limit_depth(self.xmlstream.stream)

    def connectionInitialized(self):
        xs = self.xmlstream
        inner = xs.dispatch          # the MUC's dispatcher (installed just before)

        def dispatch(obj, event=None):
            if event is None and hasattr(obj, "name"):
                rehome(obj)
            return inner(obj, event)

        xs.dispatch = dispatch
        self.transport = xs.transport
        log.info("xmppd-muc: connected as {domain}", domain=xs.thisEntity.full())

    def connectionLost(self, reason):
        if self.transport is not None:
            log.info("xmppd-muc: connection to the server lost; reconnecting")
        self.transport = None

    # -- the router interface ------------------------------------------------------
    def write(self, data):
        if self.transport is None:
            self.dropped += 1
            return
        self.transport.write(data)

    def route(self, el):
        self.write(to_bytes(el))

    def route_many(self, el, recipients):
        el.attributes["to"] = "\x00"
        data = to_bytes(el)
        del el.attributes["to"]
        head, tail = data.split(b"\x00", 1)
        if self.transport is None:
            self.dropped += 1
            return
        write = self.transport.write
        esc = domish.escapeToXml
        for r in recipients:
            write(head + esc(r, 1).encode("utf-8") + tail)


EX_CONFIG = 78
FATAL = frozenset(("not-authorized", "host-unknown", "invalid-namespace", "improper-addressing"))


class MUCComponent(component.Component):
    """wokkel's external component, reconnecting within seconds.

    A refused handshake (wrong secret, unknown domain) ends the process with
    status 78 (EX_CONFIG) and one log line, instead of retrying forever.
    """

    def __init__(self, host, port, domain, secret):
        super().__init__(host, port, domain, secret)
        self.domain = domain
        self.factory.maxDelay = MAX_RECONNECT_DELAY
        self.factory.initialDelay = 0.5
        self.factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self._stream_error)

    def _stream_error(self, reason):
        condition = getattr(reason.value, "condition", None)
        if condition in FATAL:
            self._give_up(condition)
        else:
            log.warn("xmppd-muc: stream error from the server: {cond}", cond=condition)

    def initializationFailed(self, reason):
        self._give_up(reason.getErrorMessage())

    def _give_up(self, why):
        log.error("xmppd-muc: the server refused the component {domain}: {why}",
                  domain=self.domain, why=why)
        self.factory.stopTrying()
        if reactor.running:
            reactor.addSystemEventTrigger("after", "shutdown", os._exit, EX_CONFIG)
            reactor.stop()
