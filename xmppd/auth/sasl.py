"""The SASL step of a client stream (RFC 6120 §6), whatever transport carries it.

:class:`AuthService` is built once per server: it knows the accounts, the
login throttle, the server secret and the thread pool for password checks,
and tells a stream which mechanisms to advertise (strongest first, -PLUS
only over TLS, with the XEP-0440 binding types). Each stream gets an
:class:`Exchange` and calls :meth:`Exchange.start` for ``<auth/>`` and
:meth:`Exchange.respond` for ``<response/>``; both return a Deferred that
fires with ``("challenge", bytes)`` or ``("success", bytes or None,
username)``, or fails with :class:`SASLFailure`. The stream only encodes
those as XML and waits :meth:`Exchange.failure_delay` before a failure.
"""
import base64
import binascii
import os

from twisted.internet import defer, reactor, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from xmppd.auth import channel_binding as cbmod
from xmppd.auth import credentials as credmod
from xmppd.auth.errors import SASLFailure
from xmppd.auth.plain import PlainServer, check_plain, prepare_username
from xmppd.auth.scram import ScramServer, downgrade_hash

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-1")
PLUS = tuple(m + "-PLUS" for m in SCRAM)

log = Logger(namespace="xmppd.auth")

__all__ = ["AuthService", "Exchange", "SASLFailure", "NS_SASL"]


class AuthService:
    """Per-server authentication: mechanisms on offer, credential lookups, password checks."""

    def __init__(self, cfg, accounts, throttle):
        self.cfg = cfg
        self.accounts = accounts
        self.throttle = throttle
        self.secret = credmod.ServerSecret(cfg.data_dir)
        # Password checks (PBKDF2; scrypt for not-yet-upgraded accounts, 16 MiB
        # each) get their own small pool: one thread per core is all the CPU.
        self.pool = ThreadPool(minthreads=0, maxthreads=os.cpu_count() or 2,
                               name="xmppd-password-hashing")
        self._trigger = None
        self._features = {}
        self._hashes = {}
        # An unknown user's proof is checked against random keys: it always fails.
        self._fake_keys = {h: (os.urandom(32), None) for h in credmod.HASHES}

    @property
    def iterations(self):
        return self.cfg.scram_iterations      # read live: a reload may change it

    def start(self):
        self.pool.start()
        # Stop the pool even if the reactor stops without stopService (non-daemon threads).
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self):
        if self._trigger is not None:
            try:
                reactor.removeSystemEventTrigger(self._trigger)
            except (ValueError, KeyError):
                pass
            self._trigger = None
        if self.pool.started:
            self.pool.stop()

    def in_thread(self, fn, *args):
        return threads.deferToThreadPool(reactor, self.pool, fn, *args)

    # -- what to advertise ----------------------------------------------------

    def offer(self, tls_conn):
        """(mechanisms strongest first, binding types) for a stream; ``tls_conn`` None = plain TCP."""
        if self.cfg.insecure_auth:
            # Any password logs in: only PLAIN can carry a password we never stored.
            return ("PLAIN",), ()
        cb = cbmod.types_for(tls_conn)
        return ((PLUS if cb else ()) + SCRAM + ("PLAIN",)), cb

    def features(self, tls_conn):
        """The ``<mechanisms/>`` (+ XEP-0440) stream features as a str, cached per offer."""
        key = self.offer(tls_conn)
        xml = self._features.get(key)
        if xml is None:
            mechs, cb = key
            xml = ("<mechanisms xmlns='%s'>%s</mechanisms>%s"
                   % (NS_SASL, "".join(f"<mechanism>{m}</mechanism>" for m in mechs),
                      cbmod.advert(cb)))
            self._features[key] = xml
        return xml

    def downgrade_hash(self, hash_name, offer):
        key = (hash_name, offer)
        h = self._hashes.get(key)
        if h is None:
            h = self._hashes[key] = downgrade_hash(hash_name, *offer)
        return h

    def exchange(self, tls_conn, ip):
        return Exchange(self, tls_conn, ip)


def _decode_b64(text):
    """The element text -> bytes; RFC 6120 §6.4.2: '=' is an empty response."""
    text = "".join(text.split())
    if text == "=":
        return b""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SASLFailure("incorrect-encoding")


class Exchange:
    """The SASL state of one stream: at most one mechanism running at a time."""

    def __init__(self, service, tls_conn, ip):
        self.service = service
        self.cfg = service.cfg
        self.tls_conn = tls_conn
        self.ip = ip
        self.offered = service.offer(tls_conn)
        self.plus_offered = bool(self.offered[1])
        self.mech = None
        self.used = None            # e.g. "SCRAM-SHA-256-PLUS tls-exporter", once succeeded
        self._bindings = {}

    # -- stream-facing API --------------------------------------------------------

    def start(self, mechanism, text):
        """``<auth mechanism=...>text</auth>``; text "" means no initial response."""
        if mechanism not in self.offered[0]:
            return defer.fail(SASLFailure("invalid-mechanism"))
        if mechanism == "PLAIN":
            self.mech = PlainServer(self)
        else:
            self.mech = ScramServer(mechanism, self)
        if not text.strip():
            return defer.succeed(("challenge", b""))
        return self.respond(text)

    def respond(self, text):
        """``<response>text</response>``."""
        mech = self.mech
        if mech is None:
            return defer.fail(SASLFailure("malformed-request", "no exchange in progress"))
        try:
            return defer.maybeDeferred(mech.step, _decode_b64(text)).addErrback(self._failed)
        except SASLFailure as e:
            return self._failed_now(e)

    def abort(self):
        self.mech = None

    def _failed_now(self, e):
        if e.username is None and self.mech is not None:
            e.username = getattr(self.mech, "username", None)
        self.mech = None
        return defer.fail(e)

    def _failed(self, f):
        if f.check(SASLFailure) and f.value.username is None and self.mech is not None:
            f.value.username = getattr(self.mech, "username", None)
        self.mech = None
        return f

    def failure_delay(self, failure):
        """Record a failed attempt with the throttle; seconds to wait before answering."""
        if not failure.counts:
            return 0.0
        return self.service.throttle.failed(self.ip, failure.username)

    def succeeded(self, username):
        mech = self.mech
        cb = getattr(mech, "cb_type", None)
        self.used = f"{mech.name} {cb}" if cb else mech.name
        self.mech = None
        self.service.throttle.succeeded(username)

    # -- what mechanisms ask of the stream ------------------------------------------

    @property
    def domain(self):
        return self.cfg.domain

    @staticmethod
    def prepare_username(name):
        return prepare_username(name)

    def check_authzid(self, authzid, username):
        """XMPP authzid: only the user's own bare JID (RFC 6120 §6.3.8); no proxy login."""
        from xmppd.jid import parse_or_none
        j = parse_or_none(authzid)
        if j is None or j.resource is not None or j.userhost() != f"{username}@{self.cfg.domain}":
            raise SASLFailure("invalid-authzid", None, username)

    def check_throttle(self, username):
        if self.service.throttle.refused(self.ip, username):
            raise SASLFailure("temporary-auth-failure", None, username, counts=False)

    def binding(self, cb_type):
        if cb_type not in self._bindings:
            self._bindings[cb_type] = cbmod.data_for(self.tls_conn, cb_type) \
                if cb_type in self.offered[1] else None
        return self._bindings[cb_type]

    def downgrade_hash(self, hash_name):
        return self.service.downgrade_hash(hash_name, self.offered)

    def lookup(self, username, hash_name):
        """(salt, iterations, stored_key, server_key) for SCRAM; fake ones for unknown users.

        An account with only a legacy scrypt hash has no keys yet: it gets
        the fake answer too and can only log in with PLAIN (which upgrades it).
        """
        creds, _legacy = self.service.accounts.get_credentials(username)
        if creds is not None:
            return (creds.salt, creds.iterations) + creds.keys[hash_name]
        stored, server = self.service._fake_keys[hash_name]
        return self.service.secret.fake_salt(username), self.service.iterations, stored, server

    def verify_plain(self, username, password):
        """Deferred ("success", None, username) or a not-authorized SASLFailure."""
        svc = self.service
        creds, legacy = svc.accounts.get_credentials(username)
        if self.cfg.insecure_auth:
            if creds is not None or legacy:
                return defer.succeed(("success", None, username))
            d = svc.in_thread(credmod.derive, password, svc.iterations)
            d.addCallback(self._create, username)
            return d
        fake = credmod.Credentials(svc.secret.fake_salt(username), svc.iterations,
                                   {"SHA-256": (svc._fake_keys["SHA-256"][0], None)})
        d = svc.in_thread(check_plain, creds, legacy, password, fake, svc.iterations)

        def checked(result):
            ok, upgraded = result
            if not ok:
                raise SASLFailure("not-authorized", None, username)
            if upgraded is not None:
                log.info("auth: upgraded {user} from scrypt to SCRAM keys", user=username)
                up = defer.maybeDeferred(svc.accounts.set_credentials, username, upgraded)
                up.addErrback(lambda f: log.failure("auth: storing SCRAM keys for {user} failed",
                                                    f, user=username))
                return up.addCallback(lambda _: ("success", None, username))
            return ("success", None, username)

        return d.addCallback(checked)

    def _create(self, creds, username):
        """insecure-auth: create the account (SASL success only once it is committed)."""
        from xmppd.storage.accounts import AccountError
        d = defer.maybeDeferred(self.service.accounts.create, username, None, credentials=creds)

        def created(_):
            log.info("insecure-auth: created account {user}", user=username)
            return ("success", None, username)

        def exists(f):
            f.trap(AccountError)
            return ("success", None, username)    # created meanwhile by a concurrent login

        return d.addCallbacks(created, exists)
