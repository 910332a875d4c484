"""Framings around a client session, siblings: tcp.py (RFC 6120 streams, STARTTLS),
later websocket.py (RFC 7395) and bosh.py (XEP-0206).

A transport turns bytes into elements for its :class:`xmppd.session.Session`
and back, and enforces the read/size/rate limits and timeouts
(:mod:`xmppd.transports.limits`, :mod:`xmppd.wire.parser`). It creates its
session with ``manager.new_session(self)`` when a client connects, feeds it
``session.stream_opened(to, version, lang)`` for each stream header (after
checking its own framing: namespaces, ``<open/>``, BOSH attributes) and
``session.element_received(el)`` for each top-level element, and calls
``session.transport_lost(reason)`` once the connection is gone: ``"closed"``
when the stream was ended on purpose (either side closed it or sent a
stream error), ``"lost"`` when the connection dropped (XEP-0198 resumes only
those).

The interface a session uses (:class:`Transport` documents it; a
transport need not inherit from it):
"""


class Transport:
    """What a session may call on its transport."""

    #: True once the stream is closing: nothing more may be written.
    closing = False
    #: True when the bytes travel encrypted (TLS, or HTTPS under WebSocket/BOSH).
    secure = False
    #: True when the session may offer STARTTLS (TCP before TLS).
    can_starttls = False
    #: "host:port" of the peer, for logs.
    peer = "?"
    #: The peer address when per-IP limits apply to it (None when exempt).
    limited_ip = None

    def send(self, data):
        """Write serialised XML (a stanza, features, SASL...) to the client."""
        raise NotImplementedError

    def open_stream(self):
        """Answer a stream header with ours (TCP header, WebSocket ``<open/>``...)."""
        raise NotImplementedError

    def close(self):
        """Close the stream cleanly (``</stream:stream>``, ``<close/>``, terminate)."""
        raise NotImplementedError

    def close_with_error(self, condition, text=None, app=None):
        """Send a stream error (RFC 6120 §4.9; ``app``: an application condition) and close."""
        raise NotImplementedError

    def abort(self):
        """Drop the connection at once."""
        raise NotImplementedError

    def start_tls(self):
        """After ``<proceed/>``: start TLS and expect a new stream header."""
        raise NotImplementedError

    def restart(self):
        """After SASL success: expect a new stream header (RFC 6120 §6.4.6)."""
        raise NotImplementedError

    def session_bound(self):
        """The session bound a resource: lift pre-auth limits and timers."""

    session = None

    def set_session(self, session):
        """Carry ``session`` from now on (XEP-0198 resumption moves one here).

        The session this transport had until now ends (it was a fresh one,
        made for the resuming connection).
        """
        old, self.session = self.session, session
        if old is not None and old is not session:
            old.transport = None
            old.end()
        self._session_changed(session)
        if session.bound:
            self.session_bound()

    def _stream_closing(self):
        """Our side of the stream is closed: tell the session (its resource leaves routing now)."""
        s = self.session
        if s is not None and s.transport is self:
            s.stream_closing()

    def _session_changed(self, session):
        """Point the framing's parser at ``session`` (TCP overrides)."""

    def tls_connection(self):
        """The pyOpenSSL ``Connection`` when encrypted, else None (channel binding:
        ``get_finished()``/``get_peer_finished()``, ``export_keying_material()``
        for tls-exporter, ``get_certificate()`` for tls-server-end-point)."""
        return None
