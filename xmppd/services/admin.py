"""XEP-0133 Service Administration, as XEP-0050 ad-hoc commands on the server's domain.

Only the configured ``admins`` see the commands (disco#items on the
``http://jabber.org/protocol/commands`` node is empty for anyone else,
XEP-0133 §5 leaves visibility to the server) and only they may run them
(``forbidden`` otherwise, XEP-0050 §4.4). The commands (XEP-0133 §4):

* add-user, delete-user, change-user-password (§4.1, §4.2, §4.7): the same
  credential derivation as ``xmppdctl`` (``AccountStore._derive``: SCRAM
  keys, computed in a thread), deletion
  through :func:`xmppd.storage.delete_account_data` (every per-account
  table), and a deleted account's sessions are closed;
* end-user-session (§4.6): a bare JID ends every session of the account, a
  full JID that one;
* get-online-users-list / get-online-users (§4.22), get-online-users-num
  (§4.16), get-registered-users-num (§4.15);
* announce (§4.23): a headline from the server to every available session;
* set-motd, edit-motd, delete-motd (§4.24-4.26): the message of the day is
  stored (``server_settings``) and sent as a headline to each session when
  it sends its initial presence.

Limits: passwords and the MOTD are capped (``MAX_TEXT``), a command acts on
at most ``MAX_JIDS`` accounts at once, and list results are capped at the
requested ``max_items``.
"""
import weakref

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel.data_form import Field, Form, Option

from xmppd import adhoc, jid as jidlib, storage
from xmppd.adhoc import NS_COMMANDS, Outcome, first
from xmppd.services.accounts import delete_account
from xmppd.storage.accounts import AccountError, prepare_username
from xmppd.storage.db import error_condition

NS_ADMIN = "http://jabber.org/protocol/admin"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
MAX_TEXT = 4096
MAX_JIDS = 100
MOTD = "motd"

log = Logger(namespace="xmppd.admin")


def _node(name):
    return f"{NS_ADMIN}#{name}"


def _form(title, instructions=None):
    form = Form("form", title=title, formNamespace=NS_ADMIN,
                instructions=[instructions] if instructions else None)
    return form


def _result_form(*fields):
    form = Form("result", formNamespace=NS_ADMIN)
    for f in fields:
        form.addField(f)
    return form


class Context:
    """What the commands act on: the router (sessions), the config, the storage, the MUC."""

    def __init__(self, router, cfg, store):
        self.router, self.cfg, self.store = router, cfg, store
        self.motd = None
        self.motd_sent = weakref.WeakSet()

    def derive(self, password):
        """SCRAM credentials for ``password`` (as xmppdctl stores them), derived off the reactor."""
        from xmppd.storage.accounts import AccountStore
        return threads.deferToThread(AccountStore(None, self.cfg)._derive, password)

    # -- helpers shared with the admin socket (xmppdctl kick/announce/reset) --

    def local_user(self, text):
        """The nodeprep'd username of a JID of this domain; AccountError otherwise."""
        j = jidlib.parse_or_none((text or "").strip())
        if j is None or j.user is None:
            raise AccountError(f"{text!r} is not a user JID")
        if j.host != self.cfg.domain:
            raise AccountError(f"{j.userhost()} is not an account of {self.cfg.domain}")
        return prepare_username(j.user), j

    def sessions_of(self, j):
        """The live sessions of a parsed JID: one for a full JID, all for a bare one."""
        if j.resource is not None:
            s = self.router.sessions.get(j.full())
            return [s] if s is not None else []
        return list(self.router.sessions.resources(j.userhost()).values())

    def end_sessions(self, sessions, condition=None, text=None):
        """Close ``sessions``: a plain stream close, or a stream error ``condition``."""
        for s in sessions:
            if condition is None:
                s.close()
            else:
                s.close_with_error(condition, text)
        return len(sessions)

    def announce(self, body, subject=None):
        """A headline from the server to every available session; returns how many got it."""
        msg = domish.Element((None, "message"))
        msg["from"] = self.cfg.domain
        msg["type"] = "headline"
        if subject:
            msg.addElement("subject", content=subject)
        msg.addElement("body", content=body)
        targets = [full for full, s in self.router.sessions.full.items() if s.available]
        self.router.route_many(msg, targets)
        return len(targets)

    def online_users(self):
        return sorted(self.router.sessions.bare)

    # -- message of the day ----------------------------------------------------

    def load_motd(self):
        self.motd = storage.get_setting(self.store.db, MOTD)

    def set_motd(self, text):
        d = self.store.write(storage.set_setting, MOTD, text)

        def saved(_):
            self.motd = text
            self.motd_sent = weakref.WeakSet()
        return d.addCallback(saved)

    def on_presence(self, event):
        """Send the MOTD once per session, on its initial presence (XEP-0133 §4.24)."""
        motd = self.motd
        if motd is None:
            return None
        el, session = event.stanza, event.session
        attrs = el.attributes
        if attrs.get("type") is None and not attrs.get("to") and session not in self.motd_sent:
            self.motd_sent.add(session)
            msg = domish.Element((None, "message"))
            msg["from"] = self.cfg.domain
            msg["to"] = session.full
            msg["type"] = "headline"
            msg.addElement("body", content=motd)
            session.deliver(msg)
        return None


def _text(values, var, required=True):
    vals = values.get(var) or []
    text = "\n".join(vals) if len(vals) > 1 else (vals[0] if vals else "")
    if required and not text.strip():
        raise _Missing(var)
    if len(text) > MAX_TEXT:
        raise _Invalid(f"{var}: too long (at most {MAX_TEXT} characters)")
    return text


class _Missing(Exception):
    def __init__(self, var):
        super().__init__(f"{var}: Required value missing")


class _Invalid(Exception):
    pass


class AdminCommand(adhoc.Command):
    """A XEP-0133 command: form fields declared once, errors turned into notes."""

    title = None
    form_type = NS_ADMIN

    def fields(self, ctx):
        return []

    def form(self, ctx):
        fields = self.fields(ctx)
        if fields is None:
            return None
        form = _form(self.title or self.name)
        for f in fields:
            form.addField(f)
        return form

    def run(self, ctx, values, actor):
        try:
            return self.act(ctx, values, actor)
        except (_Missing, _Invalid, AccountError) as e:
            return Outcome.error(str(e))

    def act(self, ctx, values, actor):
        raise NotImplementedError


def _accounts_field(var="accountjids", label="The Jabber ID(s)", multi=True):
    return Field("jid-multi" if multi else "jid-single", var=var, label=label, required=True)


def _jids(values, var="accountjids"):
    jids = [v for v in (values.get(var) or []) if v.strip()]
    if not jids:
        raise _Missing(var)
    if len(jids) > MAX_JIDS:
        raise _Invalid(f"{var}: at most {MAX_JIDS} JIDs at once")
    return jids


def _write_failed(failure, what):
    if failure.check(AccountError):
        return Outcome.error(str(failure.value))
    log.failure("XEP-0133 {what} failed", failure, what=what)
    return Outcome.error(f"{what} failed: {error_condition(failure.value)}")


class AddUser(AdminCommand):
    node = _node("add-user")
    name = "Add User"

    def fields(self, ctx):
        return [_accounts_field("accountjid", "The Jabber ID for the account to be added", False),
                Field("text-private", var="password", label="The password for this account",
                      required=True),
                Field("text-private", var="password-verify", label="Retype password",
                      required=True)]

    def act(self, ctx, values, actor):
        username, _ = ctx.local_user(_text(values, "accountjid"))
        password = _text(values, "password")
        if password != _text(values, "password-verify", required=False):
            raise _Invalid("password-verify: the passwords do not match")
        if ctx.store.accounts.exists(username):
            raise AccountError("Account already exists")
        d = ctx.derive(password)
        d.addCallback(lambda creds: ctx.store.accounts.create(username, None, credentials=creds))

        def created(_):
            log.info("account {user}@{domain} created by {actor}", user=username,
                     domain=ctx.cfg.domain, actor=actor)
            return Outcome.info("Account successfully created")
        return d.addCallbacks(created, _write_failed, errbackArgs=("adding the user",))


class DeleteUser(AdminCommand):
    node = _node("delete-user")
    name = "Delete User"

    def fields(self, ctx):
        return [_accounts_field(label="The Jabber ID(s) to delete")]

    def act(self, ctx, values, actor):
        targets = [ctx.local_user(t) for t in _jids(values)]
        done, failed = [], []

        def one(target):
            username, j = target
            d = delete_account(ctx.router, ctx.store, ctx.cfg, username, "account deleted")

            def deleted(_):
                bare = f"{username}@{ctx.cfg.domain}"
                log.info("account {jid} deleted by {actor}", jid=bare, actor=actor)
                done.append(bare)

            def error(f):
                failed.append(f"{username}@{ctx.cfg.domain}: "
                              + (str(f.value) if f.check(AccountError)
                                 else error_condition(f.value)))
            return d.addCallbacks(deleted, error)

        d = defer.DeferredList([one(t) for t in targets])

        def report(_):
            if failed:
                return Outcome.error("\n".join(
                    (["Deleted: " + ", ".join(done)] if done else []) + failed))
            return Outcome.info("The following accounts were deleted:\n" + "\n".join(done))
        return d.addCallback(report)


class ChangePassword(AdminCommand):
    node = _node("change-user-password")
    name = "Change User Password"

    def fields(self, ctx):
        return [_accounts_field("accountjid", "The Jabber ID for this account", False),
                Field("text-private", var="password", label="The password for this Jabber ID",
                      required=True)]

    def act(self, ctx, values, actor):
        username, _ = ctx.local_user(_text(values, "accountjid"))
        password = _text(values, "password")
        if not ctx.store.accounts.exists(username):
            raise AccountError("User does not exist")
        d = ctx.derive(password)
        d.addCallback(lambda creds: ctx.store.accounts.passwd(username, None, credentials=creds))

        def changed(_):
            log.info("password of {user}@{domain} changed by {actor}", user=username,
                     domain=ctx.cfg.domain, actor=actor)
            return Outcome.info("Password successfully changed")
        return d.addCallbacks(changed, _write_failed, errbackArgs=("changing the password",))


class EndSession(AdminCommand):
    node = _node("end-user-session")
    name = "End User Session"

    def fields(self, ctx):
        return [_accounts_field(label="The Jabber ID(s) whose sessions to end")]

    def act(self, ctx, values, actor):
        targets = [ctx.local_user(t) for t in _jids(values)]
        n = 0
        for _, j in targets:
            n += ctx.end_sessions(ctx.sessions_of(j))
        log.info("{n} session(s) ended by {actor}", n=n, actor=actor)
        return Outcome.info(f"{n} session(s) ended")


MAX_ITEMS = ("25", "50", "75", "100", "150", "200", "all")


class OnlineUsersList(AdminCommand):
    node = _node("get-online-users-list")
    name = "Get List of Online Users"

    def fields(self, ctx):
        return [Field("list-single", var="max_items", label="Maximum number of items to show",
                      value="25", options=[Option(v) for v in MAX_ITEMS])]

    def act(self, ctx, values, actor):
        limit = first(values, "max_items") or "25"
        if limit not in MAX_ITEMS:
            raise _Invalid("max_items: Value is not one of the options")
        users = ctx.online_users()
        if limit != "all":
            users = users[:int(limit)]
        return Outcome("completed", form=_result_form(
            Field("text-multi", var="onlineuserjids", label="The list of all online users",
                  values=users)))


class OnlineUsers(OnlineUsersList):
    node = _node("get-online-users")
    name = "Get List of Online Users (with sessions)"

    def act(self, ctx, values, actor):
        limit = first(values, "max_items") or "25"
        if limit not in MAX_ITEMS:
            raise _Invalid("max_items: Value is not one of the options")
        fulls = sorted(ctx.router.sessions.full)
        if limit != "all":
            fulls = fulls[:int(limit)]
        return Outcome("completed", form=_result_form(
            Field("text-multi", var="onlineuserjids", label="The list of all online sessions",
                  values=fulls)))


class OnlineUsersNum(AdminCommand):
    node = _node("get-online-users-num")
    name = "Get Number of Online Users"

    def fields(self, ctx):
        return None

    def act(self, ctx, values, actor):
        return Outcome("completed", form=_result_form(
            Field("text-single", var="onlineusersnum", label="The number of online users",
                  value=str(len(ctx.router.sessions.bare)))))


class RegisteredUsersNum(AdminCommand):
    node = _node("get-registered-users-num")
    name = "Get Number of Registered Users"

    def fields(self, ctx):
        return None

    def act(self, ctx, values, actor):
        return Outcome("completed", form=_result_form(
            Field("text-single", var="registeredusersnum", label="The number of registered users",
                  value=str(len(ctx.store.accounts.list())))))


class Announce(AdminCommand):
    node = _node("announce")
    name = "Send Announcement to Online Users"

    def fields(self, ctx):
        return [Field("text-single", var="subject", label="Subject"),
                Field("text-multi", var="announcement", label="Announcement", required=True)]

    def act(self, ctx, values, actor):
        body = _text(values, "announcement")
        subject = _text(values, "subject", required=False) or None
        n = ctx.announce(body, subject)
        log.info("announcement by {actor} sent to {n} session(s)", actor=actor, n=n)
        return Outcome.info(f"Announcement sent to {n} session(s)")


class SetMotd(AdminCommand):
    node = _node("set-motd")
    name = "Set Message of the Day"

    def fields(self, ctx):
        return [Field("text-multi", var="motd", label="Message of the Day", required=True)]

    def act(self, ctx, values, actor):
        text = _text(values, "motd")
        d = ctx.set_motd(text)
        d.addCallback(lambda _: log.info("message of the day set by {actor}", actor=actor))
        return d.addCallbacks(lambda _: Outcome.info("Message of the day set"), _write_failed,
                              errbackArgs=("setting the message of the day",))


class EditMotd(SetMotd):
    node = _node("edit-motd")
    name = "Edit Message of the Day"

    def fields(self, ctx):
        return [Field("text-multi", var="motd", label="Message of the Day", required=True,
                      values=(ctx.motd or "").split("\n") if ctx.motd else [])]


class DeleteMotd(AdminCommand):
    node = _node("delete-motd")
    name = "Delete Message of the Day"

    def fields(self, ctx):
        return None

    def act(self, ctx, values, actor):
        d = ctx.set_motd(None)
        return d.addCallbacks(lambda _: Outcome.info("Message of the day deleted"), _write_failed,
                              errbackArgs=("deleting the message of the day",))


COMMANDS = {c.node: c for c in (
    AddUser(), DeleteUser(), ChangePassword(), EndSession(), OnlineUsersList(), OnlineUsers(),
    OnlineUsersNum(), RegisteredUsersNum(), Announce(), SetMotd(), EditMotd(), DeleteMotd())}


class AdminService:
    """Registers the command IQ handler and the disco nodes on the router."""

    def __init__(self, router, cfg, store):
        self.router, self.cfg = router, cfg
        self.ctx = Context(router, cfg, store)

    def is_admin(self, iq):
        frm = jidlib.parse_or_none(iq.getAttribute("from") or "")
        return frm is not None and frm.userhost() in self.cfg.admins

    def install(self):
        r = self.router
        r.iq_handlers[NS_COMMANDS] = self.command
        r.server_features.append(NS_COMMANDS)
        r.disco_nodes[NS_COMMANDS] = self.disco_list
        for node in COMMANDS:
            r.disco_nodes[node] = self.disco_command
        r.hooks.add("client/presence", self.ctx.on_presence)
        try:
            self.ctx.load_motd()
        except Exception:
            log.failure("could not read the message of the day")
        r.admin = self.ctx

    def command(self, iq, child, target):
        """XEP-0050 §3.2 execution; only on the server's own JID."""
        if target is not None:
            raise StanzaError("service-unavailable", type="cancel")
        if iq.getAttribute("type") != "set" or child.name != "command":
            raise StanzaError("bad-request", type="modify")
        return adhoc.execute(COMMANDS, child, self.ctx, iq.getAttribute("from"),
                             self.is_admin(iq))

    def disco_list(self, iq, child, target):
        """disco#info/#items on the command-list node (XEP-0050 §2.2); empty for non-admins."""
        if target is not None:
            raise StanzaError("item-not-found", type="cancel")
        q = domish.Element((child.uri, "query"))
        q["node"] = NS_COMMANDS
        if child.uri == NS_DISCO_INFO:
            ident = q.addElement("identity")
            ident["category"], ident["type"], ident["name"] = \
                "automation", "command-list", "Commands"
            q.addElement("feature")["var"] = NS_DISCO_INFO
        elif self.is_admin(iq):
            for c in COMMANDS.values():
                item = q.addElement("item")
                item["jid"], item["node"], item["name"] = self.cfg.domain, c.node, c.name
        return q

    def disco_command(self, iq, child, target):
        """disco#info on one command node (XEP-0050 §2.3); unknown to non-admins."""
        command = COMMANDS.get(child.getAttribute("node"))
        if target is not None or command is None or not self.is_admin(iq):
            raise StanzaError("item-not-found", type="cancel")
        q = domish.Element((child.uri, "query"))
        q["node"] = command.node
        if child.uri == NS_DISCO_INFO:
            ident = q.addElement("identity")
            ident["category"], ident["type"], ident["name"] = \
                "automation", "command-node", command.name
            for f in (NS_COMMANDS, adhoc.NS_DATA):
                q.addElement("feature")["var"] = f
        return q


def install(router, cfg, store):
    svc = AdminService(router, cfg, store)
    svc.install()
    return svc
