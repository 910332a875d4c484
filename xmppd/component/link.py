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

Through a server that offers XEP-0033 multicast to components (xmppd
does: ``http://jabber.org/protocol/address`` in the disco#info it gives a
component), ``route_many`` sends one stanza to the server's domain with the
recipients as ``bcc`` addresses (at most :data:`MULTICAST_CHUNK` each), and
the server fans it out like the built-in MUC. Other servers (Prosody) get
one stanza per recipient. The server's domain is taken to be the
component's parent domain (conference.example.org -> example.org).

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
from xmppd.wire import parser as wparser
from xmppd.wire.serialize import to_bytes

log = Logger(namespace="xmppd.muc.link")
NS_ADDRESS = "http://jabber.org/protocol/address"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
MULTICAST_CHUNK = 500          # recipients per multicast stanza (xmppd accepts 1000 by default)
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
        self.multicast_to = None     # the server's domain once it offered XEP-0033 to us

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
        wparser.limit_depth(self.xmlstream.stream)

    def connectionInitialized(self):
        xs = self.xmlstream
        inner = xs.dispatch          # the MUC's dispatcher (installed just before)

        def dispatch(obj, event=None):
            if event is None and hasattr(obj, "name"):
                rehome(obj)
            return inner(obj, event)

        xs.dispatch = dispatch
        self.transport = xs.transport
        self.multicast_to = None
        domain = xs.thisEntity.full()
        log.info("xmppd-muc: connected as {domain}", domain=domain)
        server = domain.split(".", 1)[1] if "." in domain else None
        if server:
            iq = xmlstream.IQ(xs, "get")
            iq["to"], iq["from"] = server, domain
            iq.addElement((NS_DISCO_INFO, "query"))
            iq.send().addCallbacks(lambda r: self._server_info(xs, server, r), lambda f: None)

    def _server_info(self, xs, server, result):
        if xs is not self.xmlstream:
            return
        q = result.firstChildElement()
        features = {f.getAttribute("var") for f in q.elements() if f.name == "feature"} \
            if q is not None else set()
        if NS_ADDRESS in features:
            self.multicast_to = server
            log.info("xmppd-muc: {server} offers multicast (XEP-0033): room broadcasts go as one "
                     "stanza", server=server)

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
        if self.multicast_to is not None:
            recipients = list(recipients)
            if len(recipients) > 1:
                return self._multicast(el, recipients)
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


    def _multicast(self, el, recipients):
        """One stanza to the server per MULTICAST_CHUNK recipients (XEP-0033 bcc)."""
        if self.transport is None:
            self.dropped += 1
            return
        el.attributes["to"] = self.multicast_to
        mark = domish.SerializedXML("\x01")
        el.children.append(mark)
        try:
            data = to_bytes(el)
        finally:
            el.children.remove(mark)
            del el.attributes["to"]
        head, tail = data.split(b"\x01", 1)
        esc = domish.escapeToXml
        write = self.transport.write
        for i in range(0, len(recipients), MULTICAST_CHUNK):
            addrs = b"".join(b"<address type='bcc' jid='%s'/>" % esc(r, 1).encode("utf-8")
                             for r in recipients[i:i + MULTICAST_CHUNK])
            write(head + b"<addresses xmlns='" + NS_ADDRESS.encode() + b"'>" + addrs
                  + b"</addresses>" + tail)


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
