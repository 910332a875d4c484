"""What every layer uses to speak XML: below the router, above nothing.

* :mod:`xmppd.wire.serialize` -- fast stanza serialisation (``to_bytes``) and
  the serialise-once + patch-``to`` split the fan-out paths use
  (``patchable``).
* :mod:`xmppd.wire.parser` -- the hardened expat stream every transport
  parses client input with (no DTDs, entities, comments or processing
  instructions; stanza size and nesting depth capped).
* :mod:`xmppd.wire.errors` -- stanza error/result builders (RFC 6120 §8.3)
  and stream error bodies (§4.9).
* :mod:`xmppd.wire.redact` -- secrets out of traced XML.

Nothing here imports from the router, sessions or transports.
"""
NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML_NS = "http://www.w3.org/XML/1998/namespace"
XML_LANG = (XML_NS, "lang")
