"""Stream negotiation of a session: header checks, features, STARTTLS, bind.

RFC 6120 order: stream header -> features -> STARTTLS (offered only when
the transport can start TLS and is not encrypted yet) -> restart -> SASL
(:mod:`xmppd.session.sasl`) -> restart -> bind (+ optional legacy
session). Elements are dispatched by (namespace, name), never through
xpath observers. Features registered on ``stream-features`` add children;
anything the core does not negotiate goes to ``nonza-received`` first.
"""
import re
import secrets

from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import resourceprep

from xmppd.auth.sasl import NS_SASL
from xmppd.jid import parse_or_none
from xmppd.session.sasl import SASL
from xmppd.wire import NS_CLIENT
from xmppd.wire.errors import error_reply, result_reply
from xmppd.wire.serialize import to_bytes

log = Logger(namespace="xmppd.c2s")

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
LANG_RE = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")

# Pre-serialised protocol snippets (sent verbatim, never built per stream).
_BIND = (f"<bind xmlns='{NS_BIND}'/>"
         f"<session xmlns='{NS_SESSION}'><optional/></session>")
_PROCEED = ("<proceed xmlns='%s'/>" % NS_TLS).encode()
_TLS_FAILURE = ("<failure xmlns='%s'/>" % NS_TLS).encode()


def valid_version(version):
    """RFC 6120 §4.7.5: a "major.minor" version of 1.0 or higher is accepted.

    Our header always says 1.0, the highest we speak: a client announcing a
    higher version (e.g. 2.0) gets 1.0 back and decides itself whether to go
    on ("unsupported-version" is the initiator's call). A missing or lower
    version (pre-XMPP 0.9) or one that is not "number.number" is refused.
    """
    major, dot, minor = version.partition(".")
    return major.isdigit() and int(major) >= 1 and bool(dot) and minor.isdigit()


class Negotiation:
    """Mixin of :class:`xmppd.session.Session`: everything before the resource is bound."""

    def __init__(self):
        self.sasl = SASL(self)

    # -- stream header ------------------------------------------------------

    def stream_opened(self, to, version, lang=None):
        """The client opened a stream (a transport checked its own framing first).

        Checks ``to`` and ``version``; then the transport answers with its
        stream header and the features. Returns False after closing the
        stream with an error.
        """
        t = self.transport
        if lang:
            self.stanza_lang = lang   # RFC 6120 §4.7.4: the default for stanzas without xml:lang
        if to is not None:
            j = parse_or_none(to)
            if j is None or j.user is not None or j.resource is not None or j.host != self.cfg.domain:
                t.close_with_error("host-unknown")
                return False
        if not valid_version(version or ""):
            t.close_with_error("unsupported-version")
            return False
        t.open_stream()
        self.send(self.features())
        return True

    def features(self):
        """The ``<stream:features/>`` for the current step, as bytes."""
        t = self.transport
        if self.username is not None:
            parts = [_BIND]
        else:
            parts = [self.manager.preauth_features(t.secure, t.can_starttls, t.tls_connection())]
        if self.events.has("stream-features"):
            self.events.fire("stream-features", self, parts)
        return ("<stream:features>%s</stream:features>" % "".join(parts)).encode()

    # -- elements before the resource is bound --------------------------------

    def negotiate(self, el):
        t = self.transport
        uri, name = el.uri, el.name
        if self.sasl.verifying:
            t.close_with_error("policy-violation", "pipelined data during authentication")
            return
        if self.username is None:
            if uri == NS_TLS and name == "starttls":
                self.on_starttls()
            elif uri == NS_SASL:
                self.sasl.handle(el)
            elif (uri == NS_CLIENT and name == "iq" and self.manager.registration is not None
                    and self.manager.registration.wants(el)):
                self.on_register(el)
            elif uri == NS_CLIENT:
                t.close_with_error("not-authorized")
            elif not self.events.fire("nonza-received", self, el):
                t.close_with_error("unsupported-stanza-type")
            return
        if uri == NS_CLIENT and name == "iq":
            bind = None
            for child in el.elements():
                bind = child
                break
            if (bind is not None and bind.uri == NS_BIND and bind.name == "bind"
                    and el.attributes.get("type") == "set"):
                self.on_bind(el, bind)
                return
            t.close_with_error("not-authorized", "bind a resource first")
            return
        if uri == NS_CLIENT:
            t.close_with_error("not-authorized", "bind a resource first")
        elif not self.events.fire("nonza-received", self, el):
            t.close_with_error("unsupported-stanza-type")

    def on_starttls(self):
        t = self.transport
        if t.secure or not t.can_starttls:
            self.send(_TLS_FAILURE)
            t.close()
            return
        self.send(_PROCEED)
        self.sasl.reset()           # mechanisms and channel bindings change with TLS
        t.start_tls()

    def on_register(self, iq):
        """XEP-0077 §3.1 before authentication (xmppd.services.register answers)."""
        t = self.transport
        if "id" not in iq.attributes:
            t.close_with_error("bad-format", "iq without id")
            return
        self.manager.registration.preauth(iq, t.limited_ip, t.secure,
                                          self.manager.encryption_required,
                                          lambda el: self.send(to_bytes(el)))

    def authenticated_as(self, username):
        """SASL succeeded (the success element was sent): restart the stream."""
        self.username = username
        self.transport.restart()

    def on_bind(self, iq, bind):
        t = self.transport
        if "id" not in iq.attributes:
            t.close_with_error("bad-format", "iq without id")
            return
        requested = None
        for child in bind.elements():
            if child.name == "resource":
                requested = str(child).strip()
        if requested:
            try:
                resource = resourceprep.prepare(requested)
            except UnicodeError:
                resource = ""
            if not resource or len(resource.encode("utf-8")) > 1023:
                self.send(to_bytes(error_reply(iq, "bad-request", text="invalid resource")))
                return
        else:
            resource = "xmppd-" + secrets.token_hex(6)
        bare = f"{self.username}@{self.cfg.domain}"
        existing = self.router.sessions.resources(bare)
        if (len(existing) >= self.cfg.max_resources_per_account
                and resource not in existing):
            self.send(to_bytes(error_reply(iq, "resource-constraint", text="too many resources")))
            return
        self.bind(self.username, bare, resource)
        reply = result_reply(iq, None, sender=False)
        reply.attributes.pop("to", None)
        b = reply.addElement((NS_BIND, "bind"))
        b.addElement("jid", content=self.full)
        self.write_element(reply)
        self.events.fire("session-bound", self)
