"""Room archives (XEP-0313 on the room JID), stanza ids (XEP-0359) and history that survives restarts.

Option ``muc#roomconfig_enablelogging`` (``room.config["logging"]``; new
rooms get ``cfg.muc_log_by_default``: off by default, as a Prosody MUC without
mod_muc_mam; the existing MUC scripts checked against Prosody pin that). Turning it on or
off sends status 170/171 to the occupants; joiners of a logged room get
170 in their self-presence (XEP-0045 §7.2.12, §10.2.1).

A logged room stamps every groupchat message worth keeping (the history
feature's rule, :func:`history.is_historic`) with ``<stanza-id by=room/>``
before the broadcast (a stanza-id a sender forged with ``by`` = the room is
always removed) and archives it after the broadcast: the row joins the
archive's in-memory batch, so the fan-out never waits for the disk. The
sender's ``muc#user <x/>`` is stripped first (XEP-0313 §"MUC message
spoofing"); the real bare JID is kept in its own column and shown in
results only when the room is non-anonymous.

Who may query (XEP-0313 §"Security", Prosody's rules plus one): nobody
banned; in a members-only room only members and above; in a
password-protected room only occupants and members and above. ``with`` =
an occupant JID (room/nick) matches that nick; a bare (real) JID only for
requesters who may see real JIDs (non-anonymous room, or admin/owner).

History: the history feature keeps the last messages in memory; after a
restart that memory is empty, so the first join of a logged room loads the
newest ``history_length`` messages from the archive (one indexed read of
committed rows) into it, with their original timestamps.

Moderation (XEP-0425, issue-14's module) replaces an archived message with
a tombstone through :func:`tombstone`. Destroying the room deletes its
archive.
"""
import collections

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish.domish import Element
from twisted.logger import Logger

from xmppd.muc.errors import error_reply, stanza_error
from xmppd.muc.features import history
from xmppd.muc.hooks import Feature
from xmppd.muc.room import AFFILIATIONS, NS_USER
from xmppd.services import mam
from xmppd.wire.serialize import to_text

log = Logger(namespace="xmppd.muc.archive")

F_LOGGING = "muc#roomconfig_enablelogging"

feature = Feature("archive")


def archive_of(room):
    store = getattr(room.service, "store", None)
    return getattr(store, "archive", None)


def logged(room):
    return bool(room.config.get("logging", room.service.cfg.muc_log_by_default)) and \
        archive_of(room) is not None


@feature.on_install
def _install(service):
    service.default_config["logging"] = bool(service.cfg.muc_log_by_default)
    handlers = getattr(service.store, "request_handlers", None)
    if handlers is not None:
        def purged(room_jid):
            """``xmppdctl archive-purge --room``: reload the join history from what is left."""
            room = service.rooms.get(room_jid)
            if room is not None:
                room.history = collections.deque(maxlen=history.history_length(room))
                room._archive_loaded = False
        handlers["archive-purged"] = purged


# -- the option ---------------------------------------------------------------------------

@feature.hook("muc-config-form", priority=66)
def _form(event):
    from wokkel.data_form import Field
    event.form.append(Field("boolean", var=F_LOGGING, label="Archive chat on server",
                            desc="Messages are archived (XEP-0313) and room history survives "
                                 "a restart", value=logged(event.room)))


@feature.hook(f"muc-config-submitted/{F_LOGGING}")
def _submitted(event):
    room = event.room
    value = bool(event.value)
    if logged(room) == value and "logging" in room.config:
        return
    room.config["logging"] = value
    event.status_codes.add("170" if value else "171")


@feature.hook("muc-occupant-join-codes")
def _join_codes(event):
    return ["170"] if logged(event.room) else None


@feature.hook("muc-disco#info")
def _disco(event):
    if logged(event.room):
        event.features.update(mam.FEATURES)


# -- archiving --------------------------------------------------------------------------------

@feature.hook("muc-occupant-groupchat", priority=-100)
def _stamp(event):
    """Last before the broadcast: strip forged ids, stamp ours on a message we will archive."""
    room = event.room
    stanza = event.stanza
    mam.strip_ids(stanza, room.jid)
    if logged(room) and history.is_historic(stanza):
        sid = mam.new_id()
        mam.add_id(stanza, room.jid, sid)
        stanza._mam = (sid, event.occupant.bare)
    return None


@feature.hook("muc-broadcast-message", priority=1)
def _archive(event):
    stanza = event.stanza
    meta = getattr(stanza, "_mam", None)
    if meta is None:
        return None
    del stanza._mam
    room = event.room
    store = archive_of(room)
    if store is None:
        return None
    sid, real = meta
    for c in [c for c in stanza.elements(NS_USER, "x")]:
        stanza.children.remove(c)
    import time
    attrs = stanza.attributes
    to = attrs.pop("to", None)       # the room's own JID as the sender addressed it: not kept
    try:
        text = to_text(stanza)
    finally:
        if to is not None:
            attrs["to"] = to
    store.append(room.jid, sid, time.time(), real, attrs.get("from", ""), text)
    return None


@feature.hook("muc-room-destroyed")
def _destroyed(event):
    room = event.room
    store = archive_of(room)
    if store is None:
        return None
    d = store.delete_archive(room.jid)
    d.addErrback(lambda f: log.failure("deleting the archive of {room} failed", f, room=room.jid))
    return None


def tombstone(room, stanza_id, element):
    """Replace the archived message ``stanza_id`` of ``room`` by ``element`` (XEP-0425 tombstone).

    ``element`` is the message to keep in its place (e.g. with a
    ``<retracted/>`` and no body). Returns a Deferred firing True if the
    message was in the archive; the in-memory join history is left to the
    caller.
    """
    store = archive_of(room)
    if store is None:
        from twisted.internet import defer
        return defer.succeed(False)
    return store.replace(room.jid, stanza_id, to_text(element))


# -- history from the archive ------------------------------------------------------------------

def _entry(room, sid, stamp, text):
    """A history Entry built from stored text: ``to`` left open, delay stamped from the room."""
    if not text.startswith("<message") or not text.endswith("</message>"):
        return None
    entry = history.Entry(stamp, None)
    delay = "<delay xmlns='urn:xmpp:delay' from='%s' stamp='%s'/>" % (
        mam._attr(room.jid), mam.xep0082(stamp))
    entry.head = b"<message to='"
    entry.tail = ("'" + text[8:-10] + delay + "</message>").encode("utf-8")
    return entry


@feature.hook("muc-occupant-pre-join", priority=1000)
def _load_history(event):
    room = event.room
    if getattr(room, "_archive_loaded", False):
        return None
    room._archive_loaded = True
    if event.is_new_room or not logged(room):
        return None
    length = history.history_length(room)
    if length <= 0:
        return None
    try:
        rows = archive_of(room).last_now(room.jid, length)
    except Exception:
        log.failure("loading the history of {room} from its archive failed", room=room.jid)
        return None
    entries = [e for e in (_entry(room, sid, stamp, text) for sid, stamp, _, text in rows)
               if e is not None]
    live = list(room.history or ())
    room.history = collections.deque(entries + live, maxlen=length)
    return None


# -- queries -------------------------------------------------------------------------------------

def _may_see_real_jids(room, affiliation):
    return room.whois_anyone or AFFILIATIONS[affiliation] >= AFFILIATIONS["admin"]


@feature.hook(f"muc-room-iq/{mam.NS_MAM}")
def _query(event):
    room = event.room
    stanza = event.stanza
    query = event.query
    requester = event.jid
    aff = room.get_affiliation(requester)
    member = AFFILIATIONS[aff] >= AFFILIATIONS["member"]
    if aff == "outcast":
        raise stanza_error("forbidden", "auth", "You are banned from this room")
    if room.config.get("members_only") and not member:
        raise stanza_error("forbidden", "auth", "Only members may read this room's archive")
    if room.config.get("password") and not member and requester not in room.by_jid:
        raise stanza_error("forbidden", "auth", "Join this room to read its archive")
    if query.name != "query":
        raise stanza_error("feature-not-implemented", "cancel")
    if stanza.getAttribute("type") == "get":
        return mam.query_form()
    store = archive_of(room)
    if store is None:
        raise stanza_error("service-unavailable", "cancel")
    q = mam.parse_query(query, room.service.cfg.archive_max_page)
    if q.with_bare is not None and not _may_see_real_jids(room, aff):
        raise stanza_error("forbidden", "auth", "This room does not show real JIDs to you")
    extra = None
    if room.whois_anyone:
        def extra(real):
            return ("<x xmlns='%s'><item jid='%s'/></x>" % (NS_USER, mam._attr(real))
                    if real else "")
    d = mam.run_query(store, room.router, room.jid, q, requester, room.jid, extra)

    def done(fin):
        reply = Element((None, "iq"))
        reply["type"] = "result"
        reply["from"] = room.jid
        reply["to"] = requester
        if stanza.getAttribute("id") is not None:
            reply["id"] = stanza["id"]
        reply.addChild(fin)
        room.route(reply)

    def failed(f):
        e = f.value if isinstance(f.value, StanzaError) else \
            stanza_error("internal-server-error", "wait")
        room.route(error_reply(stanza, e))

    d.addCallbacks(done, failed)
    d.addErrback(lambda f: log.failure("answering an archive query on {room} failed", f,
                                       room=room.jid))
    return True
