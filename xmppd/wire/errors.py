"""Error and result builders: stanza errors (RFC 6120 §8.3) and stream errors (§4.9)."""
from twisted.words.xish import domish

from xmppd.wire import NS_STANZAS, NS_STREAM_ERRORS, NS_STREAMS, XML_LANG

# RFC 6120 §8.3.3 default error types (Twisted's table lacks policy-violation).
ERROR_TYPES = {
    "bad-request": "modify", "conflict": "cancel", "feature-not-implemented": "cancel",
    "forbidden": "auth", "gone": "cancel", "internal-server-error": "cancel",
    "item-not-found": "cancel", "jid-malformed": "modify", "not-acceptable": "modify",
    "not-allowed": "cancel", "not-authorized": "auth", "policy-violation": "modify",
    "recipient-unavailable": "wait", "redirect": "modify", "registration-required": "auth",
    "remote-server-not-found": "cancel", "remote-server-timeout": "wait",
    "resource-constraint": "wait", "service-unavailable": "cancel",
    "subscription-required": "auth", "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


def error_reply(stanza, condition, etype=None, text=None, sender=None, app=None):
    """Build the error answer to ``stanza`` (to/from swapped, id and payload kept).

    ``app`` is an application-specific condition element (e.g. XEP-0060's
    pubsub#errors), added after the text (RFC 6120 §8.3.2).
    """
    attrs = stanza.attributes
    reply = domish.Element((None, stanza.name))
    frm = attrs.get("from")
    if frm:
        reply["to"] = frm
    if sender or attrs.get("to"):
        reply["from"] = sender or attrs["to"]
    if "id" in attrs:
        reply["id"] = attrs["id"]
    reply["type"] = "error"
    if stanza.name == "iq" or stanza.name == "message":
        for child in stanza.elements():
            reply.addChild(child)
    err = reply.addElement("error")
    err["type"] = etype or ERROR_TYPES.get(condition, "cancel")
    err.addElement((NS_STANZAS, condition))
    if text:
        t = err.addElement((NS_STANZAS, "text"), content=text)
        t[XML_LANG] = "en"
    if app is not None:
        err.addChild(app)
    return reply


def result_reply(iq, payload=None, sender=True):
    """An ``iq type='result'`` answering ``iq``; ``sender=False`` omits ``from``."""
    reply = domish.Element((None, "iq"))
    attrs = iq.attributes
    if "from" in attrs:
        reply["to"] = attrs["from"]
    if sender and "to" in attrs:
        reply["from"] = attrs["to"]
    reply["id"] = attrs.get("id", "")
    reply["type"] = "result"
    if payload is not None:
        reply.addChild(payload)
    return reply


def stream_error(condition, text=None, declare_prefix=False, app=None):
    """The ``<stream:error/>`` element as bytes.

    ``declare_prefix`` adds ``xmlns:stream`` for framings where every
    element stands alone (WebSocket, BOSH); a TCP stream declared it in
    its header. ``app`` is an application-specific condition element
    (serialised XML, e.g. XEP-0198's ``<handled-count-too-high/>``), which
    RFC 6120 §4.9.4 places after the text.
    """
    body = f"<{condition} xmlns='{NS_STREAM_ERRORS}'/>"
    if text:
        body += (f"<text xmlns='{NS_STREAM_ERRORS}' xml:lang='en'>"
                 f"{domish.escapeToXml(text)}</text>")
    if app:
        body += app
    decl = f" xmlns:stream='{NS_STREAMS}'" if declare_prefix else ""
    return f"<stream:error{decl}>{body}</stream:error>".encode()
