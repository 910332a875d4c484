"""XEP-0114 external components.

* :mod:`xmppd.component.server` -- the server side: xmppd accepts a
  component for each configured ``[[components]]`` domain on
  ``component_port`` and routes that domain to it.
* :mod:`xmppd.component.link` -- the component side: a connection to
  *any* XMPP server's component port (xmppd, Prosody, ejabberd) that the
  MUC uses as its router when it runs as the ``xmppd-muc`` process.

Both speak the ``jabber:component:accept`` stream: the component opens a
stream to its domain, the server answers with a stream id, and the
component proves it knows the shared secret with
``<handshake>hex(SHA-1(id + secret))</handshake>`` (XEP-0114 §3).
"""
import hashlib

NS_COMPONENT = "jabber:component:accept"
NS_STREAMS = "http://etherx.jabber.org/streams"


def handshake_digest(stream_id, secret):
    """The handshake value of XEP-0114 §3: lower-case hex SHA-1 of id + secret."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


def rehome(el):
    """Move a stanza read from a component stream into ``jabber:client``, in place.

    The rest of xmppd (and the MUC's serialiser) treats ``jabber:client`` as
    the stanza namespace; children that inherited the component stream's
    default namespace would otherwise be written out with
    ``xmlns='jabber:component:accept'``, which clients do not understand.
    """
    el.uri = el.defaultUri = "jabber:client"
    for c in el.elements():
        if c.uri == NS_COMPONENT:
            rehome(c)
