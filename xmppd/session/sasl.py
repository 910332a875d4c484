"""The SASL step of stream negotiation (RFC 6120 §6), the one place for every transport.

Speaks ``<auth/>``, ``<challenge/>``, ``<response/>``, ``<abort/>``,
``<success/>`` and ``<failure/>``; the mechanisms (SCRAM, PLAIN), credential
checks, channel binding and throttling are :mod:`xmppd.auth`'s: each session
gets an :class:`xmppd.auth.sasl.Exchange` from ``manager.auth``. The
per-IP throttle key is ``session.transport.limited_ip`` (None when exempt);
channel-binding data comes from ``session.transport.tls_connection()``.
"""
import base64

from twisted.internet import reactor
from twisted.logger import Logger

from xmppd.auth.sasl import NS_SASL, SASLFailure
from xmppd.metrics import STATS

log = Logger(namespace="xmppd.c2s")

# RFC 6120 §6.4.5: "a reasonable number of retries (at least 2 and no more than 5)".
# Failures that guess at a password (or send garbage) end the stream after 3; a
# client trying one mechanism after another (a -PLUS it cannot bind, then SCRAM,
# then PLAIN: slixmpp <= 1.8 on TLS 1.3) gets 5 attempts in all.
MAX_SASL_FAILURES = 3
MAX_SASL_ATTEMPTS = 5

_SUCCESS = ("<success xmlns='%s'/>" % NS_SASL).encode()
_CHALLENGE = ("<challenge xmlns='%s'/>" % NS_SASL).encode()
_SUCCESS_DATA = "<success xmlns='%s'>%%s</success>" % NS_SASL
_CHALLENGE_DATA = "<challenge xmlns='%s'>%%s</challenge>" % NS_SASL


def _failure(condition):
    return f"<failure xmlns='{NS_SASL}'><{condition}/></failure>".encode()


class SASL:
    """SASL state of one session."""

    def __init__(self, session):
        self.session = session
        self.exchange = None        # xmppd.auth.sasl.Exchange, once the client sends <auth/>
        self.verifying = False      # a SASL step (e.g. a password check in a thread) runs
        self.failures = 0       # failures the login throttle counts
        self.attempts = 0       # every failed attempt
        self._later = None

    def stop(self):
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None

    def reset(self):
        """Mechanisms and channel bindings change with TLS."""
        self.exchange = None

    @property
    def used(self):
        return self.exchange.used if self.exchange is not None else "?"

    @staticmethod
    def redacted(el):
        """Trace form of a pre-auth element: SASL payloads carry credentials."""
        if el.uri == NS_SASL and el.name in ("auth", "response"):
            mech = el.getAttribute("mechanism")
            return (f"<{el.name} xmlns='{NS_SASL}'{' mechanism=%r' % mech if mech else ''}>"
                    f"[redacted]</{el.name}>")
        return el.toXml()

    def _closed(self):
        t = self.session.transport
        return t is None or t.closing

    def handle(self, el):
        name = el.name
        if name == "auth":
            self.on_auth(el)
        elif name == "response" and self.exchange is not None:
            self.step(self.exchange.respond(str(el)))
        elif name == "abort":
            if self.exchange is not None:
                self.exchange.abort()
            self.failed("aborted")
        else:
            self.failed("malformed-request")

    def on_auth(self, el):
        s = self.session
        t = s.transport
        if not t.secure and s.manager.encryption_required:
            self.failed("encryption-required")
            return
        if self.exchange is None:
            self.exchange = s.manager.auth.exchange(t.tls_connection(), t.limited_ip)
        self.step(self.exchange.start(el.attributes.get("mechanism"), str(el)))

    def step(self, d):
        """Wait for one SASL step of :mod:`xmppd.auth`; refuse pipelined data meanwhile."""
        self.verifying = True
        d.addCallbacks(self._step_done, self._step_failed)
        d.addErrback(self._step_error)

    def _step_done(self, result):
        self.verifying = False
        if self._closed():
            return
        s = self.session
        if result[0] == "challenge":
            data = result[1]
            s.send((_CHALLENGE_DATA % base64.b64encode(data).decode()).encode() if data
                   else _CHALLENGE)
            return
        _, data, username = result
        self.exchange.succeeded(username)
        STATS.login(self.exchange.used.split(" ", 1)[0], True)
        s.send((_SUCCESS_DATA % base64.b64encode(data).decode()).encode() if data else _SUCCESS)
        s.authenticated_as(username)

    def _step_failed(self, failure):
        failure.trap(SASLFailure)
        self.verifying = False
        if self._closed():
            return
        delay = self.exchange.failure_delay(failure.value) if self.exchange else 0
        if delay > 0:
            self.verifying = True       # pipelined data while we wait is still refused
            self._later = reactor.callLater(delay, self._fail_later, failure.value.condition)
        else:
            self.failed(failure.value.condition, failure.value.counts)

    def _fail_later(self, condition):
        self._later = None
        self.verifying = False
        if not self._closed():
            self.failed(condition)

    def _step_error(self, failure):
        self.verifying = False
        log.failure("c2s {cid}: authentication step failed", failure, cid=self.session.cid)
        if not self._closed():
            self.failed("temporary-auth-failure")

    def failed(self, condition, counts=True):
        s = self.session
        s.send(_failure(condition))
        if condition in ("aborted", "encryption-required", "invalid-mechanism"):
            return
        STATS.login(getattr(getattr(self.exchange, "mech", None), "name", None), False)
        self.attempts += 1
        self.failures += bool(counts)
        if self.failures >= MAX_SASL_FAILURES or self.attempts >= MAX_SASL_ATTEMPTS:
            s.transport.close_with_error("policy-violation",
                                         "too many failed authentication attempts")
