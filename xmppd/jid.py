"""JID parsing with a bounded cache and the checks Twisted's parser skips.

``twisted.words.protocols.jabber.jid.JID`` costs ~100 µs and its
``internJID`` cache grows without bound on attacker-chosen values, so every
JID that enters the server goes through :func:`parse` instead. Tables
elsewhere are keyed by the *string* forms (``full()``/``userhost()``),
which are 5x faster dict keys than JID objects.
"""
from functools import lru_cache

from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.protocols.jabber.xmpp_stringprep import Profile, resourceprep

__all__ = ["JID", "InvalidJID", "parse", "parse_or_none", "strict_resource", "MAX_PART_BYTES"]

# RFC 3454 §7 / RFC 6122 §A: addresses in stanzas are *queries*, where code points
# unassigned in Unicode 3.2 (most emoji, e.g. U+1F916) are allowed; only *stored*
# strings (a bound resource, a room nick) must pass the strict profile. Routing uses
# this one, so a stanza to room@service/<emoji> reaches the room, which then refuses
# the nick itself (see strict_resource).
_query_resourceprep = Profile(mappings=resourceprep.mappings, prohibiteds=resourceprep.prohibiteds,
                              check_unassigneds=False)

MAX_PART_BYTES = 1023  # RFC 6122/7622: each part at most 1023 octets


class InvalidJID(ValueError):
    """The string is not a valid JID (answer with jid-malformed)."""


@lru_cache(maxsize=65536)
def _parse(text):
    if not text or len(text) > 3071:
        raise InvalidJID(text)
    # Twisted accepts these forms silently; RFC 7622 forbids them.
    at = text.find("@")
    slash = text.find("/")
    if at == 0 and (slash == -1 or slash > at):
        raise InvalidJID(text)
    if text.endswith("/"):
        raise InvalidJID(text)
    if at > 0 and (slash == -1 or at < slash) and text[at + 1:at + 2] in ("", "/"):
        raise InvalidJID(text)
    try:
        j = JID(text)
    except (InvalidFormat, IndexError, RuntimeError, UnicodeError, ValueError) as e:
        j = _query_form(text)
        if j is None:
            raise InvalidJID(text) from e
    for part in (j.user, j.host, j.resource):
        if part is not None and (not part or len(part.encode("utf-8")) > MAX_PART_BYTES):
            raise InvalidJID(text)
    host = j.host
    if host.endswith(".") or ".." in host:
        raise InvalidJID(text)
    return j


def _query_form(text):
    """The JID with its resource prepared by the query profile, or None."""
    slash = text.find("/")
    if slash <= 0:
        return None
    try:
        j = JID(text[:slash])
        resource = _query_resourceprep.prepare(text[slash + 1:])
    except (InvalidFormat, IndexError, RuntimeError, UnicodeError, ValueError):
        return None
    if not resource:
        return None
    j.resource = resource
    return j


def strict_resource(resource):
    """True if ``resource`` (already prepared) passes strict resourceprep (a storable nick)."""
    try:
        return resourceprep.prepare(resource) == resource
    except UnicodeError:
        return False


def parse(text):
    """Return the (shared, immutable) JID for ``text`` or raise InvalidJID."""
    return _parse(text)


def parse_or_none(text):
    """Like :func:`parse` but returns None for missing or invalid input."""
    if not text:
        return None
    try:
        return _parse(text)
    except InvalidJID:
        return None
