"""Who gets a stanza.

Data flows one way: c2s stream -> Router.route -> (local sessions | a
component such as the MUC service | the server's own services) -> stream.

CONTRACT (used by c2s, services and the MUC component; keep it stable):

* ``Router(config)``; ``router.domain`` (e.g. ``localhost``).
* ``router.route(element)``: deliver one stanza whose ``from`` is already
  trustworthy (stamped by c2s, or set by a component for its own domain).
  Looks at the ``to`` host: the local domain -> RFC 6121 §8.5 local delivery
  (sessions, or the server's own services for IQs to the server/bare JIDs);
  a component domain (``routes[host]``, e.g. ``conference.localhost``) ->
  ``routes[host].send(element)``; anything else -> an error back to the
  sender (remote-server-not-found), never for error stanzas.
* ``router.route_many(element, recipients)``: the fan-out fast path for the
  MUC. ``element`` is built once (its ``to`` is ignored); ``recipients`` is
  an iterable of full-JID strings. It is serialised once with a placeholder
  for ``to`` and each recipient gets head + escaped(to) + tail written to its
  session's transport. Recipients with no live session are treated like
  ``route`` of a copy would (for MUC traffic: dropped).
* ``router.addRoute(host, xs)`` / ``removeRoute(host, xs)``: wokkel's
  InternalComponent registers itself here.
* ``router.sessions``: the registry of bound c2s sessions (see
  :class:`SessionRegistry`).
"""
