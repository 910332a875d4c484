"""In-band registration (XEP-0077) of server accounts (not rooms: see xmppd/muc/register.py).

* Before authentication, when ``allow_registration`` is on: ``get`` returns
  the fields, ``set`` with username + password creates the account (SCRAM
  keys derived off the reactor thread, committed before the result), at most
  ``max_registrations_per_ip`` per ``registration_window`` seconds from one
  address (§3.1; ``limits_exempt`` networks are not counted). Over an
  unencrypted stream when encryption is required it is refused (§11).
* After authentication, for the account itself (§3.2, §3.3): ``get`` says
  ``<registered/>``, ``set`` with username + password changes the password,
  ``<remove/>`` deletes the account and all its data
  (:func:`xmppd.storage.delete_account_data`, the same as ``xmppdctl deluser``)
  and then ends the account's sessions.
"""
from collections import deque

from twisted.internet import defer, reactor, threads
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from xmppd.auth import credentials as credmod
from xmppd.router import error_reply, result_reply
from xmppd.services.accounts import delete_account
from xmppd.storage.accounts import AccountError, prepare_username
from xmppd.auth.throttle import MAX_TRACKED, ip_key

NS_REGISTER = "jabber:iq:register"
NS_FEATURE = "http://jabber.org/features/iq-register"
FEATURE = f"<register xmlns='{NS_FEATURE}'/>"
MAX_PASSWORD = 1024     # bytes; longer is no stronger and costs PBKDF2 time

log = Logger(namespace="xmppd.register")


class PerIPWindow:
    """Events per address in a sliding window (bounded memory)."""

    def __init__(self, limit, window, clock=None):
        self.limit, self.window = limit, window
        self.clock = clock or reactor.seconds
        self.events = {}

    def full(self, ip):
        if not self.limit or not self.window or ip is None:
            return False
        q = self.events.get(ip_key(ip))
        now = self.clock()
        while q and q[0] <= now - self.window:
            q.popleft()
        return bool(q) and len(q) >= self.limit

    def add(self, ip):
        if not self.limit or not self.window or ip is None:
            return
        key = ip_key(ip)
        q = self.events.pop(key, None) or deque(maxlen=self.limit)
        q.append(self.clock())
        self.events[key] = q
        while len(self.events) > MAX_TRACKED:
            del self.events[next(iter(self.events))]


def _fields(query):
    username = password = None
    remove = False
    for child in query.elements():
        if child.uri != NS_REGISTER:
            continue
        if child.name == "username":
            username = str(child)
        elif child.name == "password":
            password = str(child)
        elif child.name == "remove":
            remove = True
    return username, password, remove


def _check_password(password):
    if not password or len(password.encode("utf-8")) > MAX_PASSWORD:
        raise StanzaError("not-acceptable", type="modify", text="a password of 1 to 1024 bytes is needed")
    try:
        credmod.saslprep(password)
    except credmod.CredentialError as e:
        raise StanzaError("not-acceptable", type="modify", text=str(e))


class Registration:
    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.store = store
        self.per_ip = PerIPWindow(cfg.max_registrations_per_ip, cfg.registration_window)

    def install(self):
        self.router.iq_handlers[NS_REGISTER] = self.account_iq
        self.router.server_features.append(NS_REGISTER)
        self.router.registration = self if self.cfg.allow_registration else None

    # -- before authentication (§3.1) ------------------------------------------------

    @staticmethod
    def wants(iq):
        """True for a pre-auth IQ this service answers."""
        for child in iq.elements():
            return child.uri == NS_REGISTER and child.name == "query"
        return False

    def preauth(self, iq, ip, encrypted, encryption_required, reply):
        """Answer a pre-auth registration IQ; ``reply(element)`` writes to the stream."""
        d = defer.maybeDeferred(self._preauth, iq, ip, encrypted, encryption_required)

        def error(f):
            if f.check(StanzaError):
                return error_reply(iq, f.value.condition, f.value.type, f.value.text)
            log.failure("registration failed", f)
            return error_reply(iq, "internal-server-error")

        def send(el):
            el.attributes.pop("from", None)
            el.attributes.pop("to", None)
            reply(el)

        d.addCallbacks(lambda payload: result_reply(iq, payload, False), error).addCallback(send)
        return d

    def _preauth(self, iq, ip, encrypted, encryption_required):
        if not encrypted and encryption_required:
            raise StanzaError("not-authorized", type="auth", text="use STARTTLS before registering")
        query = next(iq.elements())
        t = iq.getAttribute("type")
        if t == "get":
            q = domish.Element((NS_REGISTER, "query"))
            q.addElement("instructions", content="Choose a username and password.")
            q.addElement("username")
            q.addElement("password")
            return q
        if t != "set":
            raise StanzaError("bad-request", type="modify")
        username, password, remove = _fields(query)
        if remove:
            raise StanzaError("not-authorized", type="auth", text="log in to remove an account")
        if not username:
            raise StanzaError("not-acceptable", type="modify", text="a username is needed")
        try:
            username = prepare_username(username)
        except AccountError:
            raise StanzaError("jid-malformed", type="modify", text="not a valid username")
        _check_password(password)
        if self.per_ip.full(ip):
            raise StanzaError("resource-constraint", type="wait",
                              text="too many registrations from your address; try later")
        if self.store.accounts.exists(username):
            raise StanzaError("conflict", type="cancel", text="that username is taken")
        self.per_ip.add(ip)      # counted when tried: a flood of conflicts is limited too
        d = threads.deferToThread(credmod.derive, password, self.cfg.scram_iterations)
        d.addCallback(lambda creds: self.store.accounts.create(username, None, credentials=creds))

        def created(_):
            log.info("register: created account {user}", user=username)
            return None

        def exists(f):
            f.trap(AccountError)
            raise StanzaError("conflict", type="cancel", text="that username is taken")

        return d.addCallbacks(created, exists)

    # -- the account itself (§3.2, §3.3) -----------------------------------------------

    def account_iq(self, iq, query, target):
        bare = (iq.getAttribute("from") or "").split("/", 1)[0]
        if target is not None and target != bare:
            # to the server (target None) or with no 'to' (the account itself, RFC 6120 §10.3.3)
            raise StanzaError("service-unavailable", type="cancel")
        username = bare.split("@", 1)[0]
        t = iq.getAttribute("type")
        if t == "get":
            q = domish.Element((NS_REGISTER, "query"))
            q.addElement("registered")
            q.addElement("username", content=username)
            return q
        new_name, password, remove = _fields(query)
        if remove:
            d = delete_account(self.router, self.store, self.cfg, username,
                               "the account was removed")
            return d.addCallback(lambda _: self._removed(username))
        try:
            same = new_name is not None and prepare_username(new_name) == username
        except AccountError:
            same = False
        if not same:
            raise StanzaError("not-allowed", type="cancel", text="only your own password can be changed")
        _check_password(password)
        d = threads.deferToThread(credmod.derive, password, self.cfg.scram_iterations)
        d.addCallback(lambda creds: self.store.accounts.passwd(username, None, credentials=creds))
        d.addCallback(lambda _: log.info("register: {user} changed the password", user=username))
        return d.addCallback(lambda _: None)

    def _removed(self, username):
        """The result goes out first; delete_account ends the sessions just after it (§3.2)."""
        log.info("register: {user} removed the account", user=username)
        return None


def install(router, cfg, store):
    reg = Registration(router, cfg, store)
    reg.install()
    return reg
