"""The hardened XML stream parser every transport feeds client bytes to.

:func:`new_stream` returns a domish ``ExpatElementStream`` that rejects
DTDs, entity declarations, comments and processing instructions
(RFC 6120 §11.1: ``restricted-xml``), caps element nesting depth (deep
trees overflow Python's recursion limit when serialised) and the size of
one stanza. :func:`parse` feeds large reads in chunks so the size limit
holds within one read too (Twisted's check only runs between ``parse``
calls). :func:`error_condition` maps a parser error to the stream error
condition to close with.
"""
from twisted.words.xish import domish

MAX_DEPTH = 64            # element nesting, stream root included
PARSE_CHUNK = 4096        # bytes per parser call: the size check overshoots by at most this
MAX_ELEMENTS = 10000      # elements in one stanza

ParserError = domish.ParserError


def _reject_restricted(*args):
    raise domish.ParserError("restricted-xml")


def _too_deep(*args):
    raise domish.ParserError("Maximum element depth exceeded")


def limit_depth(stream, max_depth=MAX_DEPTH):
    """Wrap the expat element handlers of a domish stream to cap nesting depth."""
    p = stream.parser
    start, end = p.StartElementHandler, p.EndElementHandler
    depth = 0

    def on_start(name, attrs):
        nonlocal depth
        if depth >= max_depth:
            _too_deep()
        depth += 1
        start(name, attrs)

    def on_end(name):
        nonlocal depth
        depth -= 1
        end(name)

    p.StartElementHandler = on_start
    p.EndElementHandler = on_end


def new_stream(on_start, on_element, on_end, max_stanza_size, max_depth=MAX_DEPTH):
    """A fresh hardened parser calling ``on_start(root)``, ``on_element(el)``, ``on_end()``."""
    stream = domish.elementStream()
    stream.DocumentStartEvent = on_start
    stream.ElementEvent = on_element
    stream.DocumentEndEvent = on_end
    p = stream.parser
    p.buffer_text = True          # O(n) character data instead of O(n^2)
    p.buffer_size = 8192          # allocated per parser: 64 KiB would cost 56 KiB per session
    p.StartDoctypeDeclHandler = _reject_restricted
    p.EntityDeclHandler = _reject_restricted
    p.CommentHandler = _reject_restricted
    p.ProcessingInstructionHandler = _reject_restricted
    stream.maxStanzaSize = max_stanza_size
    stream.maxElementCount = MAX_ELEMENTS
    limit_depth(stream, max_depth)
    return stream


def parse(owner, data):
    """Feed ``data`` to ``owner.stream`` in chunks so the size limit holds per stanza.

    The stream may be replaced (restart) or closed between chunks; the rest
    then goes to the new parser, or is dropped once ``owner.closing``.
    """
    for i in range(0, len(data), PARSE_CHUNK):
        stream = owner.stream
        if stream is None or owner.closing:
            return
        stream.parse(data[i:i + PARSE_CHUNK])


def error_condition(exc):
    """(stream error condition, text) for a ``ParserError``."""
    msg = str(exc)
    if "restricted-xml" in msg:
        return "restricted-xml", None
    if "Maximum" in msg:
        return "policy-violation", "stanza too large"
    return "not-well-formed", None
