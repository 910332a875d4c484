"""Message archives for accounts: XEP-0313 (urn:xmpp:mam:2, #extended) and XEP-0359 stanza ids.

What is archived (XEP-0313 §"Business rules", Prosody's choices where the
XEP is silent): chat and normal messages with a body (or a ``<store/>``
hint), in both directions, once each; never ``no-store`` /
``no-permanent-store`` hints (XEP-0334), errors, headlines, groupchat (the
room archives those), Carbons copies (``urn:xmpp:carbons:2`` wrappers:
the original is archived instead) or MAM results.

* ``account/message`` (to a local account, before delivery): a stanza-id
  with ``by`` = the account's bare JID is first stripped (XEP-0359 §5:
  only we may set one), then, if archived, ``<stanza-id by=bare id=UID/>``
  is added, so every device sees the UID it can page from.
* ``client/message`` (a local client sent it): archived in the sender's
  archive; a stanza-id it forged with ``by`` = its own JID is removed.
  A message to one's own bare JID is archived once, as incoming.

Both hooks run at priority 10: above Carbons (copies then carry the
stanza-id) and below blocking/privacy modules (a refused message is
neither stamped nor archived).

Queries (§4) are IQs to the account's bare JID (or with no ``to``) from the
account itself; anyone else gets ``forbidden``. The query engine here
(:func:`parse_query`, :func:`run_query`) is shared with room archives
(:mod:`xmppd.muc.features.archive`). Results are written straight to the
requesting session, then the IQ result follows: results of one query are
sent in one go from one callback, so two queries' results never
interleave. Pages are capped at ``archive_max_page``. ``<count/>`` (the size
of the whole result set) is answered to ``<max>0</max>``, RSM's way to ask
for it (XEP-0059 §2.7); pages do not carry it, because counting a 100 000
message archive costs tens of milliseconds while a page costs about one.
``<first>`` carries no ``index`` (optional in XEP-0059, and some clients
stop paging backwards when it is present).

Preferences (``<prefs/>``, XEP-0313 v0.6 §5, in the mam:2 namespace):
``default`` always/roster/never plus ``always``/``never`` JID lists. This
server keeps no rosters, so ``roster`` means "never, except the JIDs in
``always``" (documented). ``never`` wins over ``always``.

Retention: every ``archive_cleanup_interval`` seconds, messages older than
``archive_expires_after`` (default one week, as Prosody) are deleted from
every archive (accounts and rooms).
"""
import base64
import datetime
import os
import time

from twisted.internet import reactor, task
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import data_form

from xmppd import jid as jidlib
from xmppd.storage.archive import ArchiveNotFound, expire
from xmppd.storage.db import error_condition
from xmppd.wire.serialize import escape_attr, to_text, xep0082

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXT = "urn:xmpp:mam:2#extended"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_DATA = "jabber:x:data"
NS_CLIENT = "jabber:client"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"

DEFAULT_PAGE = 20
FEATURES = (NS_MAM, NS_MAM_EXT, NS_SID)
PREFS_DEFAULTS = ("always", "roster", "never")
MAX_PREFS_JIDS = 1000          # entries in each of the always/never lists
MAX_TIME = 253402300799.0      # 9999-12-31T23:59:59Z
_BODY_NS = (None, NS_CLIENT)
_QUERY_FIELDS = {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"}
PREFS_CACHE_MAX = 50000

log = Logger(namespace="xmppd.mam")


def bad(condition, text=None, etype=None):
    from xmppd.router import ERROR_TYPES
    return StanzaError(condition, etype or ERROR_TYPES.get(condition, "cancel"), text)


# -- stanza ids (XEP-0359) ---------------------------------------------------------

_ID_BATCH = 256
_ids = []           # ready-made ids, taken from the end


def new_id():
    """An archive UID / stanza-id: a time in ms (11 hex digits), then 96 random bits.

    The random part makes it unguessable (XEP-0359 §6); the time prefix makes
    new ids sort after older ones, so the unique ``sid`` index of the archive
    grows at its end instead of taking a random page per row. Ids are made
    256 at a time (one ``os.urandom`` call, one clock read: the prefix is the
    time the batch was made, which still sorts every batch after the last).
    """
    pool = _ids
    if not pool:
        prefix = "%011x" % (time.time_ns() // 1000000)
        raw = base64.urlsafe_b64encode(os.urandom(12 * _ID_BATCH)).decode("ascii")
        pool.extend(prefix + raw[i:i + 16] for i in range(len(raw) - 16, -1, -16))
    return pool.pop()


def strip_ids(stanza, by):
    """Remove every ``<stanza-id by=by/>`` (only the entity named in ``by`` may set it)."""
    forged = [c for c in stanza.elements(NS_SID, "stanza-id") if c.getAttribute("by") == by]
    for c in forged:
        stanza.children.remove(c)


def add_id(stanza, by, sid):
    el = stanza.addElement((NS_SID, "stanza-id"))
    el["by"] = by
    el["id"] = sid
    return el


def scan(stanza, by):
    """Remove forged ``<stanza-id by=by/>`` and tell whether to archive, in one pass.

    Returns ``(archivable, stripped)``: the same as :func:`strip_ids` then
    :func:`archivable`, walking the children once (both hooks run on every
    message).
    """
    t = stanza.attributes.get("type")
    veto = t is not None and t != "chat" and t != "normal"
    keep = False
    forged = None
    for c in stanza.children:
        if isinstance(c, str):
            continue
        uri = c.uri
        name = c.name
        if uri == NS_SID:
            if name == "stanza-id" and c.attributes.get("by") == by:
                if forged is None:
                    forged = []
                forged.append(c)
        elif name == "body" and uri in _BODY_NS:
            keep = True
        elif uri == NS_HINTS:
            if name == "no-store" or name == "no-permanent-store":
                veto = True
            elif name == "store":
                keep = True
        elif uri == NS_CARBONS:
            if name == "sent" or name == "received":
                veto = True
        elif uri == NS_MAM:
            veto = True
    if forged is not None:
        for c in forged:
            stanza.children.remove(c)
    return keep and not veto, forged is not None


def archivable(stanza):
    """True for a chat/normal message worth keeping in an account archive (see module doc)."""
    t = stanza.getAttribute("type")
    if t is not None and t != "chat" and t != "normal":
        return False
    keep = False
    for c in stanza.elements():
        uri = c.uri
        if c.name == "body" and uri in _BODY_NS:
            keep = True
        elif uri == NS_HINTS:
            if c.name == "no-store" or c.name == "no-permanent-store":
                return False
            if c.name == "store":
                keep = True
        elif uri == NS_CARBONS and (c.name == "sent" or c.name == "received"):
            return False
        elif uri == NS_MAM:
            return False
    return keep


# -- time -----------------------------------------------------------------------------



def parse_time(text, var):
    """XEP-0082 DateTime -> POSIX seconds; bad-request for anything else."""
    raw = (text or "").strip()
    try:
        if not raw or len(raw) > 40 or "T" not in raw:
            raise ValueError
        dt = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        if dt.tzinfo is None:
            raise ValueError        # XEP-0082 DateTime requires a zone
        return max(0.0, min(dt.timestamp(), MAX_TIME))
    except (ValueError, OverflowError):
        raise bad("bad-request", f"'{var}' must be an XEP-0082 DateTime (e.g. 2026-01-31T12:00:00Z)")


# -- queries ----------------------------------------------------------------------------

class Query:
    """A parsed archive query: form filters (XEP-0313 §4.1) and RSM paging (XEP-0059)."""

    __slots__ = ("queryid", "with_bare", "with_full", "with_jid", "start", "end", "after_id",
                 "before_id", "ids", "max", "rsm_after", "rsm_before", "flip")

    def __init__(self):
        self.queryid = None
        self.with_bare = self.with_full = self.with_jid = None
        self.start = self.end = None
        self.after_id = self.before_id = None
        self.ids = None
        self.max = DEFAULT_PAGE
        self.rsm_after = None
        self.rsm_before = None      # None: forward; "": last page; UID: page before it
        self.flip = False


def _single(values, var):
    if len(values) > 1:
        raise bad("bad-request", f"field '{var}' takes one value")
    return values[0] if values else None


def _parse_form(x, q, max_page):
    if x.getAttribute("type", "submit") != "submit":
        raise bad("bad-request", "the query form must be of type 'submit'")
    fields = {}
    for f in x.elements(NS_DATA, "field"):
        var = f.getAttribute("var")
        if not var:
            raise bad("bad-request", "a form field has no 'var'")
        if var in fields:
            raise bad("bad-request", f"field '{var}' appears twice")
        if var not in _QUERY_FIELDS:
            # XEP-0313 §4.1.5: an unrecognised field is feature-not-implemented
            raise bad("feature-not-implemented", f"unknown field '{var}'")
        fields[var] = [str(v) for v in f.elements(NS_DATA, "value")]
    form_type = _single(fields.get("FORM_TYPE", []), "FORM_TYPE")
    if form_type != NS_MAM:
        raise bad("bad-request", f"FORM_TYPE must be {NS_MAM}")
    w = _single(fields.get("with", []), "with")
    if w:
        j = jidlib.parse_or_none(w.strip())
        if j is None:
            raise bad("jid-malformed", "'with' is not a valid JID")
        q.with_jid = j
        if j.resource is None:
            q.with_bare = j.userhost()
        else:
            q.with_full = j.full()
    for var in ("start", "end"):
        v = _single(fields.get(var, []), var)
        if v is not None:
            setattr(q, var, parse_time(v, var))
    for var, attr in (("after-id", "after_id"), ("before-id", "before_id")):
        v = _single(fields.get(var, []), var)
        if v is not None:
            if not v or len(v) > 256:
                raise bad("bad-request", f"'{var}' must be an archive id")
            setattr(q, attr, v)
    ids = fields.get("ids")
    if ids is not None:
        if not ids or len(ids) > max_page or any(not v or len(v) > 256 for v in ids):
            raise bad("bad-request", f"'ids' takes 1 to {max_page} archive ids")
        q.ids = list(dict.fromkeys(ids))


def _parse_rsm(s, q, max_page):
    seen = set()
    for c in s.elements():
        if c.uri != NS_RSM:
            raise bad("bad-request", f"unexpected <{c.name}/> in the RSM set")
        if c.name in seen:
            raise bad("bad-request", f"<{c.name}/> appears twice in the RSM set")
        seen.add(c.name)
        text = str(c).strip()
        if c.name == "max":
            if not text.isdigit() or len(text) > 9:
                raise bad("bad-request", "RSM <max/> must be a non-negative integer")
            q.max = min(int(text), max_page)
        elif c.name == "after":
            if not text or len(text) > 256:
                raise bad("bad-request", "RSM <after/> must hold an archive id")
            q.rsm_after = text
        elif c.name == "before":
            if len(text) > 256:
                raise bad("bad-request", "RSM <before/> must hold an archive id")
            q.rsm_before = text
        elif c.name == "index":
            raise bad("feature-not-implemented", "RSM <index/> is not supported; use after/before")
        else:
            raise bad("bad-request", f"unexpected <{c.name}/> in the RSM set")
    if q.rsm_after is not None and q.rsm_before is not None:
        raise bad("bad-request", "RSM <after/> and <before/> together are undefined (XEP-0313 "
                                 "§4.3.3); use the before-id/after-id fields")


def parse_query(query, max_page):
    """Parse ``<query xmlns='urn:xmpp:mam:2'>``; StanzaError with the XEP's condition if bad."""
    q = Query()
    q.max = min(DEFAULT_PAGE, max_page)
    qid = query.getAttribute("queryid")
    if qid is not None:
        if len(qid) > 256:
            raise bad("bad-request", "queryid is too long")
        q.queryid = qid
    forms = sets = 0
    for c in query.elements():
        if c.uri == NS_DATA and c.name == "x":
            forms += 1
            if forms > 1:
                raise bad("bad-request", "more than one form")
            _parse_form(c, q, max_page)
        elif c.uri == NS_RSM and c.name == "set":
            sets += 1
            if sets > 1:
                raise bad("bad-request", "more than one RSM set")
            _parse_rsm(c, q, max_page)
        elif c.uri == NS_MAM and c.name == "flip-page":
            q.flip = True
        else:
            raise bad("bad-request", f"unexpected <{c.name}/> in the query")
    return q


def query_form():
    """The query form (XEP-0313 §4.1.5): every field we accept, none required."""
    form = data_form.Form("form", formNamespace=NS_MAM)
    form.addField(data_form.Field("jid-single", var="with"))
    form.addField(data_form.Field("text-single", var="start"))
    form.addField(data_form.Field("text-single", var="end"))
    form.addField(data_form.Field("text-single", var="before-id"))
    form.addField(data_form.Field("text-single", var="after-id"))
    ids = data_form.Field("list-multi", var="ids")
    form.addField(ids)
    el = form.toElement()
    for f in el.elements(NS_DATA, "field"):
        if f.getAttribute("var") == "ids":
            v = f.addElement(("http://jabber.org/protocol/xdata-validate", "validate"))
            v["datatype"] = "xs:string"
            v.addElement("open")
    q = domish.Element((NS_MAM, "query"))
    q.addChild(el)
    return q


def _attr(s):
    return domish.escapeToXml(s, 1)


def result_bytes(to, frm, queryid, sid, stamp, stanza_text, extra=""):
    """One ``<message><result><forwarded>`` as bytes, around the stored stanza text.

    The stored text is ours (serialised by :func:`to_text`), so it is
    spliced in as it is: no parse per result. ``extra`` (XML text) goes
    inside the forwarded message before its end tag (e.g. a room's real-JID
    ``<x/>``).
    """
    head = "<message to='%s'" % _attr(to)
    if frm:
        head += " from='%s'" % _attr(frm)
    head += " id='%s'><result xmlns='urn:xmpp:mam:2'" % _attr(new_id())
    if queryid is not None:
        head += " queryid='%s'" % _attr(queryid)
    inner = stanza_text
    if inner.startswith("<message"):
        inner = "<message xmlns='jabber:client'" + inner[8:]
    if extra and inner.endswith("</message>"):
        inner = inner[:-10] + extra + "</message>"
    return (head + " id='%s'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' "
            "stamp='%s'/>%s</forwarded></result></message>"
            % (_attr(sid), xep0082(stamp), inner)).encode("utf-8")


def fin(q, rows, complete, count):
    f = domish.Element((NS_MAM, "fin"))
    if complete:
        f["complete"] = "true"
    s = f.addElement((NS_RSM, "set"))
    if rows:
        first, last = rows[0][0], rows[-1][0]
        if q.flip:
            first, last = last, first
        s.addElement("first", content=first)
        s.addElement("last", content=last)
    if count is not None:
        s.addElement("count", content=str(count))
    return f


def run_query(store, router, owner, q, to, frm, extra=None):
    """Find one page of ``owner``'s archive, write the results to ``to``; Deferred(<fin/>).

    ``extra(row)`` may return XML text to add to a forwarded message.
    Results go to ``to``'s local session (nothing else can query us);
    an unknown id in the query fails with item-not-found.
    """
    d = store.find(owner, q)

    def send(found):
        rows, complete, count = found
        session = router.sessions.full.get(to)
        if session is not None and rows:
            ordered = reversed(rows) if q.flip else rows
            for sid, stamp, with_bare, text in ordered:
                session.write_stanza(result_bytes(to, frm, q.queryid, sid, stamp, text,
                                                  extra(with_bare) if extra else ""))
        return fin(q, rows, complete, count)

    def failed(f):
        if f.check(ArchiveNotFound):
            raise bad("item-not-found", "no such id in this archive")
        if f.check(StanzaError):
            return f
        log.failure("mam: query on {owner} failed", f, owner=owner)
        raise bad(error_condition(f.value))

    return d.addCallbacks(send, failed)


# -- preferences --------------------------------------------------------------------------

def prefs_element(prefs):
    p = domish.Element((NS_MAM, "prefs"))
    p["default"] = prefs.get("default", "always")
    for name in ("always", "never"):
        lst = p.addElement(name)
        for j in prefs.get(name, ()):
            lst.addElement("jid", content=j)
    return p


def parse_prefs(el):
    default = el.getAttribute("default")
    if default not in PREFS_DEFAULTS:
        raise bad("bad-request", "prefs 'default' must be always, roster or never")
    out = {"default": default, "always": [], "never": []}
    seen = set()
    for c in el.elements():
        if c.uri != NS_MAM or c.name not in ("always", "never") or c.name in seen:
            raise bad("bad-request", f"unexpected <{c.name}/> in prefs")
        seen.add(c.name)
        jids = []
        for j in c.elements():
            if j.uri != NS_MAM or j.name != "jid":
                raise bad("bad-request", f"unexpected <{j.name}/> in <{c.name}/>")
            parsed = jidlib.parse_or_none(str(j).strip())
            if parsed is None:
                raise bad("jid-malformed", "a prefs entry is not a valid JID")
            jids.append(parsed.userhost())
        if len(jids) > MAX_PREFS_JIDS:
            raise bad("policy-violation", f"at most {MAX_PREFS_JIDS} JIDs per list", "modify")
        out[c.name] = list(dict.fromkeys(jids))
    return out


def allowed_by(prefs, peer):
    """Archive a message with ``peer`` (bare JID)?  No rosters: 'roster' means never."""
    if prefs is None:
        return True
    if peer in prefs.get("never", ()):
        return False
    if peer in prefs.get("always", ()):
        return True
    return prefs.get("default", "always") == "always"


# -- the account archive service ------------------------------------------------------------

class AccountArchive:
    def __init__(self, router, cfg, store):
        self.router = router
        self.cfg = cfg
        self.store = store
        self.archive = store.archive
        self._prefs = {}       # bare JID -> prefs dict or None (default: always)
        self._sent = None      # (stanza, text, children, attributes) last archived as sent
        self._cleanup = None

    def install(self):
        r = self.router
        r.hooks.add("client/message", self.outgoing, priority=10)
        r.hooks.add("account/message", self.incoming, priority=10)
        r.hooks.add("user-deleted", self.forget)
        r.iq_handlers[NS_MAM] = self.iq
        for f in FEATURES:
            if f not in r.account_features:
                r.account_features.append(f)
        r.mam = self
        reactor.callWhenRunning(self._start_cleanup)

    # -- retention ------------------------------------------------------------
    def _start_cleanup(self):
        if self.cfg.archive_expires_after > 0 and self._cleanup is None:
            self._cleanup = task.LoopingCall(self.cleanup)
            self._cleanup.start(self.cfg.archive_cleanup_interval, now=True).addErrback(
                lambda f: log.failure("mam: retention loop stopped", f))
            reactor.addSystemEventTrigger("before", "shutdown", self._stop_cleanup)

    def _stop_cleanup(self):
        if self._cleanup is not None and self._cleanup.running:
            self._cleanup.stop()

    def cleanup(self):
        d = expire(self.archive, self.cfg.archive_expires_after)

        def done(n):
            if n:
                log.info("mam: retention removed {n} archived messages older than {s} s",
                         n=n, s=self.cfg.archive_expires_after)
        d.addCallbacks(done, lambda f: log.failure("mam: retention cleanup failed", f))
        return d

    # -- preferences ------------------------------------------------------------
    def prefs(self, owner):
        cache = self._prefs
        if owner in cache:
            return cache[owner]
        try:
            p = self.archive.get_prefs_now(owner)
        except Exception:
            log.failure("mam: reading the prefs of {owner} failed", owner=owner)
            return None
        if len(cache) >= PREFS_CACHE_MAX:
            cache.clear()
        cache[owner] = p
        return p

    # -- archiving ----------------------------------------------------------------
    # A message between two local accounts is archived twice: as sent (client/message)
    # and, a moment later in the same call, as received (account/message), where it
    # only gained our <stanza-id/>. The sent text is kept in ``_sent`` so the received
    # text is that plus the stanza-id (when the stanza is otherwise unchanged: same
    # attributes in the same order, same children), and the received text is handed to
    # the router as ``event.wire``, the bytes it delivers: one serialisation for two
    # archive rows and the delivery instead of three.

    def outgoing(self, event):
        el = event.stanza
        own = event.session.bare
        keep, _ = scan(el, own)
        if not keep:
            return None
        attrs = el.attributes
        j = jidlib.parse_or_none(attrs.get("to", ""))
        if j is None:
            return None
        peer = j.userhost()
        if peer == own:
            return None        # archived once, as incoming
        if not allowed_by(self.prefs(own), peer):
            return None
        text = to_text(el)
        self.archive.append(own, new_id(), time.time(), peer, j.full(), text)
        self._sent = (el, text, list(el.children), list(attrs.items()))
        return None

    def incoming(self, event):
        el = event.stanza
        sent, self._sent = self._sent, None
        j = event.jid
        owner = j.userhost()
        keep, stripped = scan(el, owner)
        if not keep:
            return None
        if owner not in self.router.sessions.bare and not self.router.user_exists(j.user):
            return None
        attrs = el.attributes
        f = jidlib.parse_or_none(attrs.get("from", ""))
        if f is None:
            return None
        peer = f.userhost()
        if not allowed_by(self.prefs(owner), peer):
            return None
        sid = new_id()
        if sent is not None and sent[0] is el and not stripped and el.children == sent[2] \
                and list(attrs.items()) == sent[3] and sent[1].endswith("</message>"):
            add_id(el, owner, sid)
            text = "%s<stanza-id xmlns='%s' by='%s' id='%s'/></message>" % (
                sent[1][:-10], NS_SID, escape_attr(owner), escape_attr(sid))
        else:
            add_id(el, owner, sid)
            text = to_text(el)
        self.archive.append(owner, sid, time.time(), peer, f.full(), text)
        event.wire = text.encode("utf-8")
        return None

    # -- IQs ----------------------------------------------------------------------
    def iq(self, iq, child, target):
        frm = iq.getAttribute("from") or ""
        requester = frm.split("/", 1)[0]
        if target is None:
            raise bad("service-unavailable", "the server has no archive; query your account")
        if requester != target:
            raise bad("forbidden", "only the account itself may use its archive", "auth")
        t = iq.getAttribute("type")
        if child.name == "query":
            if t == "get":
                return query_form()
            q = parse_query(child, self.cfg.archive_max_page)
            return run_query(self.archive, self.router, target, q, frm, iq.getAttribute("to"))
        if child.name == "prefs":
            if t == "get":
                return prefs_element(self.prefs(target) or {"default": "always"})
            prefs = parse_prefs(child)
            d = self.archive.set_prefs(target, prefs)

            def stored(_):
                self._prefs[target] = prefs
                return prefs_element(prefs)

            def failed(f):
                log.failure("mam: storing the prefs of {owner} failed", f, owner=target)
                raise bad(error_condition(f.value))
            return d.addCallbacks(stored, failed)
        raise bad("feature-not-implemented", f"<{child.name}/> is not a MAM request")

    def forget(self, ev):
        """The account is gone, its archive with it (xmppd.services.accounts): so are its prefs."""
        self._prefs.pop(ev.bare, None)


def install(router, cfg, store):
    if getattr(store, "archive", None) is None:
        return None
    svc = AccountArchive(router, cfg, store)
    svc.install()
    return svc
