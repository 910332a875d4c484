"""Stanza errors as the MUC sends them (RFC 6120 §8.3, with XEP-0045's ``by``).

Twisted's ``StanzaError.toResponse`` adds a legacy ``code`` attribute, copies
every child of the request and does not know ``policy-violation``; we build
the reply ourselves so refusals look exactly like XEP-0045's examples.
"""
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish.domish import Element

# condition -> default type (RFC 6120 §8.3.3): one table for the whole server
from xmppd.router import ERROR_TYPES as DEFAULT_TYPE

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"



def stanza_error(condition, type=None, text=None):
    """A StanzaError whose ``type`` is always set (Twisted leaves it None for unknown ones)."""
    return StanzaError(condition, type or DEFAULT_TYPE.get(condition, "cancel"), text)


def error_element(condition, type=None, text=None, by=None, gone_uri=None):
    err = Element((None, "error"))
    err["type"] = type or DEFAULT_TYPE.get(condition, "cancel")
    if by:
        err["by"] = by
    cond = err.addElement((NS_STANZAS, condition))
    if gone_uri:
        cond.addContent(gone_uri)
    if text:
        t = err.addElement((NS_STANZAS, "text"))
        t.addContent(text)
    return err


def error_reply(stanza, condition, type=None, text=None, by=None, keep=()):
    """Return the error reply to ``stanza`` (to/from swapped, id kept).

    ``keep`` names (uri, name) pairs of the request's children to echo back,
    e.g. the ``<x xmlns='…muc'/>`` of a refused join, as XEP-0045 shows.
    """
    if isinstance(condition, StanzaError):
        e = condition
        condition, type, text = e.condition, e.type, e.text
        by = getattr(e, "by", None) or by
    reply = Element((None, stanza.name))
    reply["type"] = "error"
    if stanza.getAttribute("from"):
        reply["to"] = stanza["from"]
    if stanza.getAttribute("to"):
        reply["from"] = stanza["to"]
    if stanza.getAttribute("id"):
        reply["id"] = stanza["id"]
    for child in stanza.elements():
        if (child.uri, child.name) in keep:
            copy = Element((child.uri, child.name))
            reply.addChild(copy)
    reply.addChild(error_element(condition, type, text, by))
    return reply
