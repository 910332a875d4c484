"""Discussion history (XEP-0045 §7.2.14-7.2.15), in memory only.

Every broadcast groupchat message worth keeping (one with a body, or a
``store`` hint, or encrypted/marker payloads; never one with a
``no-store``/``no-permanent-store`` hint; never subject changes or status
messages) is kept by reference with its timestamp: nothing is copied or
serialised on the groupchat hot path. The first time an entry is replayed
it is serialised once, with its ``urn:xmpp:delay`` stamp (from = the
room), around a placeholder for ``to``; every later join writes those
bytes straight to the joiner's session, like the router's fan-out.

A joiner's ``<history maxchars maxstanzas seconds since/>`` is honoured
(all limits at once: the smallest result wins; ``maxchars='0'`` = none);
without any, ``default_history`` messages are sent
(``muc#roomconfig_defaulthistorymessages``, service default
``cfg.muc_default_history``). A room keeps ``history_length`` messages
(``muc#roomconfig_historylength``), at most ``cfg.muc_max_history``.
"""
import collections
import datetime
import time

from twisted.words.xish import domish
from wokkel.data_form import Field
from wokkel.delay import Delay

from xmppd import jid as jidlib
from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import NS_MUC

NS_CLIENT = "jabber:client"
F_LENGTH = "muc#roomconfig_historylength"
F_DEFAULT = "muc#roomconfig_defaulthistorymessages"

feature = Feature("history", defaults={"history_length": 20, "default_history": None})

_CLIENT_NS = (None, NS_CLIENT)
_KEEP_NS = ("urn:xmpp:eme:0",)          # encrypted payloads: assume important
_MARKERS = "urn:xmpp:chat-markers:0"
_HINTS = "urn:xmpp:hints"


class Entry:
    """One history message: the broadcast element, its time, and its bytes once built."""

    __slots__ = ("ts", "stanza", "head", "tail")

    def __init__(self, ts, stanza):
        self.ts = ts
        self.stanza = stanza
        self.head = None
        self.tail = None

    def serialise(self, room_jid):
        """Build head/tail bytes (stanza + delay, ``to`` left open) once."""
        if self.head is None:
            stamp = datetime.datetime.fromtimestamp(self.ts, datetime.timezone.utc)
            delay = Delay(stamp, sender=jidlib.parse(room_jid)).toElement()
            el = self.stanza
            el.addChild(delay)
            el.attributes["to"] = "\x00"
            try:
                data = el.toXml(defaultUri=NS_CLIENT).encode("utf-8")
            finally:
                del el.attributes["to"]
                el.children.remove(delay)
            self.head, self.tail = data.split(b"\x00", 1)
            self.stanza = None      # the bytes are all we need from now on
        return self.head, self.tail


def max_length(room):
    return max(0, int(getattr(room.service.cfg, "muc_max_history", 50)))


def history_length(room):
    """Messages the room keeps (its setting bounded by the service's)."""
    return min(int(room.config.get("history_length") or 0), max_length(room))


def default_count(room):
    value = room.config.get("default_history")
    if value is None:
        value = int(getattr(room.service.cfg, "muc_default_history", 20))
    return min(int(value), history_length(room))


def _store(room):
    length = history_length(room)
    hist = room.history
    if not isinstance(hist, collections.deque) or hist.maxlen != length:
        hist = collections.deque(hist if hist is not None else (), maxlen=length)
        room.history = hist
    return hist


def is_historic(stanza):
    """Prosody's rule for what belongs in history (hints win)."""
    keep = False
    for c in stanza.elements():
        uri = c.uri
        if uri == _HINTS:
            if c.name in ("no-store", "no-permanent-store"):
                return False
            if c.name == "store":
                keep = True
        elif c.name == "body" and uri in _CLIENT_NS:
            keep = True
        elif uri == _MARKERS or (c.name == "encryption" and uri in _KEEP_NS):
            keep = True
    return keep


@feature.hook("muc-broadcast-message", priority=-1)
def _add(event):
    stanza = event.stanza
    if stanza.getAttribute("type") != "groupchat" or not is_historic(stanza):
        return None
    room = event.room
    if history_length(room) == 0:
        if room.history:
            room.history = collections.deque(maxlen=0)
        return None
    _store(room).append(Entry(time.time(), stanza))
    return None


def parse_request(stanza):
    """(maxchars, maxstanzas, since) from the join's <history/>; all None when absent."""
    history = None
    for x in stanza.elements():
        if x.name == "x" and x.uri == NS_MUC:
            for c in x.elements():
                if c.name == "history" and c.uri == NS_MUC:
                    history = c
                    break
    if history is None:
        return None, None, None

    def number(name):
        try:
            return max(0, int(history.getAttribute(name)))
        except (TypeError, ValueError):
            return None

    maxchars, maxstanzas, seconds = number("maxchars"), number("maxstanzas"), number("seconds")
    since = None
    raw = history.getAttribute("since")
    if raw:
        try:
            dt = datetime.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=datetime.timezone.utc)
            since = dt.timestamp()
        except ValueError:
            since = None
    if seconds is not None:
        cutoff = time.time() - seconds
        since = cutoff if since is None else max(since, cutoff)
    return maxchars, maxstanzas, since


def select(room, entries, to_len, maxchars, maxstanzas, since):
    """The newest entries that satisfy every limit, oldest first."""
    chosen = []
    chars = 0
    for entry in reversed(entries):
        if maxstanzas is not None and len(chosen) >= maxstanzas:
            break
        if since is not None and entry.ts < since:
            break
        if maxchars is not None:
            head, tail = entry.serialise(room.jid)
            chars += len(head) + len(tail) + to_len
            if chars > maxchars:
                break
        chosen.append(entry)
    chosen.reverse()
    return chosen


@feature.hook("muc-occupant-session-new", priority=50)
def _send(event):
    room = event.room
    entries = room.history
    if not entries:
        return None
    maxchars, maxstanzas, since = parse_request(event.stanza)
    if maxchars is None and maxstanzas is None and since is None:
        maxstanzas = default_count(room)
    if maxchars == 0 or maxstanzas == 0:
        return None
    to = getattr(event, "jid", None) or event.occupant.jid   # the joining session
    # like router.route_many: no live local session, nothing to deliver
    session = room.router.sessions.get(to)
    if session is None:
        return None
    to_escaped = domish.escapeToXml(to, 1).encode("utf-8")
    for entry in select(room, entries, len(to_escaped), maxchars, maxstanzas, since):
        head, tail = entry.serialise(room.jid)
        session.write_patched(head, tail)
    return None


def _int_field(form, var):
    value = form.get(var)
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise stanza_error("not-acceptable", "modify", f"{var} must be a whole number")
    return number


@feature.hook("muc-config-form", priority=65)
def _form(event):
    room = event.room
    event.form.append(Field("text-single", var=F_LENGTH,
                            label="Maximum number of history messages returned by room",
                            desc="Specify the maximum number of previous messages that should be "
                                 "sent to users when they join the room",
                            value=str(history_length(room))))
    event.form.append(Field("text-single", var=F_DEFAULT,
                            label="Default number of history messages returned by room",
                            desc="Specify the number of previous messages sent to new users when "
                                 "they join the room",
                            value=str(default_count(room))))


@feature.hook("muc-config-submitted", priority=10)
def _validate(event):
    _int_field(event.form, F_LENGTH)
    _int_field(event.form, F_DEFAULT)


@feature.hook(f"muc-config-submitted/{F_LENGTH}")
def _length(event):
    number = _int_field(event.form, F_LENGTH)
    if number is None:
        return
    room = event.room
    if room.set_config("history_length", min(number, max_length(room))):
        event.status_codes.add("104")
        _store(room)


@feature.hook(f"muc-config-submitted/{F_DEFAULT}")
def _default(event):
    number = _int_field(event.form, F_DEFAULT)
    if number is None:
        return
    room = event.room
    if number == default_count(room):
        return
    room.config["default_history"] = number
    event.status_codes.add("104")


@feature.hook("muc-disco#info")
def _disco(event):
    event.form.append(Field("text-single", var="muc#maxhistoryfetch",
                            label="Maximum Number of History Messages Returned by Room",
                            value=str(history_length(event.room))))
