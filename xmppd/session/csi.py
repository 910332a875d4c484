"""XEP-0352 Client State Indication: hold back what an inactive client does not need now.

A feature module on the session events, like :mod:`xmppd.session.sm`, so
every transport gets it. ``session.csi`` is None while the client is active
(the default of every stream, §4) and a dict of held stanzas while it is
inactive.

What is held (XEP-0352 §5 leaves the policy to the server; these are
Prosody's csi_simple rules plus de-duplication): presence updates (not
subscriptions, errors, or MUC presence carrying status code 110, i.e. about
the user itself) and messages that only carry a chat state. Of several held
updates from the same sender only the newest is kept: a client that wakes up
needs each contact's and occupant's current state, not the history. That is
where the traffic saving comes from (benchmarks/csi_bench.py).

Everything else (a message with a body or subject, IQs, errors...) first
flushes what is held, in order, then goes out, so the client never sees a
stanza overtake an older one. ``<active/>`` flushes too, and so does a held
set reaching ``csi_max_held`` entries.

With Stream Management, CSI runs first on ``stanza-sending``; held stanzas
are counted by SM only when they are written (or when the connection drops:
then they join SM's unacked queue, to be resent on resumption), so SM's
``h`` always matches what the client really got.
"""
from twisted.logger import Logger

NS = "urn:xmpp:csi:0"
_FEATURE = f"<csi xmlns='{NS}'/>"
_CHATSTATES = b"http://jabber.org/protocol/chatstates"

log = Logger(namespace="xmppd.csi")


def hold_key(data):
    """The de-duplication key of a holdable serialised stanza, or None if it must go out now."""
    if data.startswith(b"<presence"):
        end = data.find(b">")
        tag = data[:end]
        if b"type='subscri" in tag or b"type='unsubscri" in tag or b"type='error'" in tag \
                or b"code='110'" in data:
            return None
        kind = b"p"
    elif data.startswith(b"<message"):
        if _CHATSTATES not in data or b"<body" in data or b"<subject" in data:
            return None
        end = data.find(b">")
        tag = data[:end]
        if b"type='error'" in tag:
            return None
        kind = b"m"
    else:
        return None
    i = tag.find(b" from='")
    if i < 0:
        return object()          # nothing to merge with: unique
    i += 7
    return kind + tag[i:tag.find(b"'", i)]


class ClientStateIndication:
    def __init__(self, manager, sm=None):
        self.manager = manager
        self.sm = sm             # xmppd.session.sm.StreamManagement, to count what we release
        self.max_held = manager.cfg.csi_max_held

    def install(self):
        ev = self.manager.events
        ev.add("session-started", self.started)
        ev.add("stream-features", self.features)
        ev.add("nonza-received", self.nonza)
        ev.add("stanza-sending", self.sending, priority=200)     # before SM counts
        ev.add("transport-lost", self.transport_lost, priority=100)

    @staticmethod
    def started(session):
        session.csi = None

    @staticmethod
    def features(session, parts):
        if session.authenticated:
            parts.append(_FEATURE)

    def nonza(self, session, el):
        if el.uri != NS:
            return None
        if not session.authenticated:
            session.close_with_error("not-authorized", "authenticate first")
        elif el.name == "inactive":
            if session.csi is None:
                session.csi = {}
        elif el.name == "active":
            self.flush(session)
            session.csi = None
        else:
            session.close_with_error("unsupported-stanza-type")
        return True

    def sending(self, session, data):
        held = session.csi
        if held is None or session.transport is None:
            return None
        key = hold_key(data)
        if key is None:
            self.flush(session)      # then the caller writes ``data``: order is kept
            return None
        held.pop(key, None)          # a newer state replaces the older one
        held[key] = data
        if len(held) >= self.max_held:
            self.flush(session)
        return True

    def flush(self, session):
        """Write everything held, oldest first (counted by SM as it goes out)."""
        held = session.csi
        if not held:
            return
        session.csi = {}
        sm = self.sm
        out = []
        for data in held.values():
            if sm is not None and sm.sending(session, data):
                break                # SM closed the stream (unacked overflow)
            out.append(data)
        if out:
            session.send_raw(b"".join(out))

    def transport_lost(self, session, reason):
        """The connection is gone: held stanzas join SM's queue (resent on resumption)."""
        held = session.csi
        session.csi = None           # a resumed stream starts active (§4)
        if held and self.sm is not None:
            for data in held.values():
                if self.sm.sending(session, data):
                    break
        return None


def install(manager, sm=None):
    csi = ClientStateIndication(manager, sm)
    csi.install()
    return csi
