"""Room events and the feature-module API of the MUC (modelled on Prosody's).

The room core (:mod:`xmppd.muc.room`) knows occupants, roles, affiliations
and routing. Every room *option* lives in one module under
``xmppd/muc/features/`` that declares its defaults and hooks room events,
so adding an option touches one file. Event names are Prosody's, so a
feature can be compared with ``modules/muc/<name>.lib.lua``.

Writing a feature module
========================
::

    # xmppd/muc/features/name.py
    from wokkel.data_form import Field
    from xmppd.muc.hooks import Feature

    feature = Feature("name", defaults={"name": ""})   # keys of room.config

    @feature.hook("muc-config-form", priority=100)
    def _form(event):
        event.form.append(Field("text-single", var="muc#roomconfig_roomname",
                                label="Title", value=event.room.config["name"]))

    @feature.hook("muc-config-submitted/muc#roomconfig_roomname")
    def _submitted(event):
        if event.room.set_config("name", event.value or ""):
            event.status_codes.add("104")

    @feature.hook("muc-disco#info")
    def _info(event):
        event.identity_name = event.room.config["name"] or None
        event.form.append(Field("text-single", var="muc#roominfo_...", value=...))

An on/off option with nothing else to it is one call:
``feature.boolean_option(key, var, label=..., desc=..., priority=..., disco=(on, off),
on_change=None)`` (see public.py, persistent.py).

Then add the module name to ``FEATURES`` in ``xmppd/muc/features/__init__.py``
(explicit list: import order is deterministic; form order comes from hook
priorities, higher first, as in Prosody).

``Feature(name, defaults={...}, install=None)``:
  * ``defaults`` are merged into every new room's ``room.config`` (a plain
    dict, JSON-serialisable values only: it is what RoomStore persists).
  * ``@feature.hook(event_name, priority=0)`` registers a handler.
  * ``feature.install = fn(service)`` (or ``@feature.on_install``) runs once
    when the MUC component starts, with the :class:`MUCService`; use it for
    service-level things (e.g. add a wokkel handler for ad-hoc commands to
    ``service.parent``, the InternalComponent).

Firing semantics (:meth:`Hooks.fire`)
-------------------------------------
Handlers run in descending priority (ties: registration order). The first
handler that returns a value other than ``None`` stops the chain and that
value is returned by ``fire`` (Prosody's rule). "Pre" events refuse by
raising ``twisted.words.protocols.jabber.error.StanzaError(condition,
type=..., text=...)``: the core turns it into the error reply (with
``by=<room>`` for presence errors). Never send replies yourself from a pre
event unless you also return ``True`` to say "handled".

The event object is an :class:`Event`: attributes given by the core (always
``event.room``; others listed below); handlers may add their own.

Room config keys (``room.config``)
----------------------------------
The core reads these keys, with these defaults, whether or not the owning
feature module is loaded (they are in :data:`xmppd.muc.room.CORE_DEFAULTS`):

====================  ============  ===========================================
key                   default       read by the core for
====================  ============  ===========================================
name                  ""            disco identity name
persistent            False         destroy when empty; persist to RoomStore
public                False         listed in service disco#items (Prosody: hidden)
members_only          False         (members_only feature)
moderated             False         default role visitor (moderated feature)
whois                 "moderators"  'moderators'|'anyone': who sees real JIDs
password              ""            (password feature)
max_users             0             0 = unlimited (max_users feature)
presence_broadcast    [moderator,   roles whose presence is broadcast; may
                      participant,  contain "none" (show unavailable members)
                      visitor]
allow_pm              "anyone"      'anyone'|'participants'|'moderators'|'none'
changesubject         False         occupants (not only moderators) may change subject
allow_invites         False         participants may invite
history_length        20            (history feature)
subject               ""            (subject feature; with subject_from)
subject_from          ""            room JID/nick that set the subject
locked                False         set on creation until first config submit
====================  ============  ===========================================

Events (core fires; attributes besides ``room``)
------------------------------------------------
``muc-room-pre-create``      stanza (join presence), jid (real full JID).
                             Raise StanzaError to refuse creation.
``muc-room-created``         (room exists, creator not yet joined)
``muc-room-destroyed``       reason, alternate (venue JID or None)
``muc-get-default-role``     affiliation (str) -> return a role str, or
                             "none" to deny entry. Core default at -1:
                             admin/owner -> moderator, else participant,
                             outcast -> none.
``muc-occupant-pre-join``    stanza, occupant (not yet in the room; .nick,
                             .jid, .bare, .role, .affiliation), is_new_room.
                             Raise StanzaError to refuse the join.
``muc-occupant-joined``      occupant, stanza (after the join broadcast)
``muc-occupant-session-new`` occupant, stanza (the join presence), jid.
                             Fires after the joiner's self-presence. The
                             core sends the subject here at priority 20
                             (from config subject/subject_from); history
                             hooks in above it (50) so it comes first.
``muc-occupant-pre-change``  occupant, stanza, new_nick (None if not a nick
                             change). Raise StanzaError to refuse.
``muc-occupant-left``        occupant, nick, reason codes (set)
``muc-occupant-groupchat``   occupant, stanza (a groupchat message about to
                             be broadcast). Raise StanzaError to refuse;
                             return True if handled (e.g. subject change).
``muc-broadcast-message``    stanza (already broadcast: history stores it)
``muc-private-message``      occupant (sender), target (occupant), stanza.
                             Raise StanzaError to refuse.
``muc-occupant-iq``          occupant (sender), target (occupant), stanza,
                             query (first child or None), jid (sender's
                             real JID): an IQ get/set from an occupant to
                             an occupant JID, before it is relayed. Return
                             True when answered (e.g. XEP-0410 self-ping);
                             raise StanzaError to refuse.
``muc-message-to-room``      occupant (sender or None), stanza: a non
                             groupchat message to the bare room JID
                             (invites, declines, voice requests). Return
                             True when handled; unhandled -> core error.
``muc-config-form``          form (list of wokkel Field, appended to),
                             actor (full JID str)
``muc-config-submitted/<var>`` value (type-checked), field, form (dict of
                             all submitted values), status_codes (set),
                             actor
``muc-config-submitted``     status_codes, form, actor (after all vars)
``muc-disco#info``           features (set of str), form (list of Field for
                             muc#roominfo), identity_name (str or None),
                             requestor (str)
``muc-disco#info/<node>``    node, requestor (str), result (list of wokkel
                             disco elements to return; append to it)
``muc-pre-set-affiliation``  jid (bare str), affiliation, previous, actor,
                             reason. Raise StanzaError to refuse.
``muc-set-affiliation``      jid, affiliation, previous, actor, reason, data
                             (the affiliation data dict, e.g. reserved nick)
``muc-pre-set-role``         occupant, role, previous, actor (privileged
                             changes only; raise StanzaError to refuse)
``muc-pre-room-destroy``     reason, alternate, actor
``muc-config-cancelled``     actor (owner sent a cancel form)
``muc-config-applied``       like muc-config-submitted, after every var
``muc-occupant-join-codes``  occupant -> return a list of extra status codes
                             for the joiner's self-presence (e.g. ["170"])
``muc-room-iq/<namespace>``  stanza, query, jid: an IQ get/set to the bare
                             room JID in a namespace the core does not
                             handle. Return an Element (result payload),
                             False (empty result), True (you replied
                             yourself) or raise StanzaError; None (nobody
                             handled it) -> service-unavailable.
``muc-service-message``      stanza, service (no room): a message to the
                             service domain. Return True if handled.
``muc-registration-request`` jid, nick, form: an unaffiliated user's
                             registration in a room with registration
                             approval (§9.9); raise StanzaError to refuse.
``muc-tombstone-stanza``     stanza, jid: a stanza to a tombstone (a room
                             whose config holds ``tombstone``). Return True
                             when answered; None lifts it (the stanza then
                             goes on as if there were no room).
``muc-message-moderated``    stanza_id, actor (occupant), reason, tombstone
                             (the <retracted/> message): after an XEP-0425
                             retraction was broadcast.

Occupants carry ``occupant_id`` (XEP-0421, or None) and ``stamp`` (its
serialised element, added to every presence and message of the occupant).
``room.service.hold_broadcasts()`` (muc#admin) queues what rooms send until
the IQ is answered; ``room.route(el, early=True)`` still goes first.

Service helpers for features: ``room.service.after_reply(fn)`` runs fn
after the current room IQ has been answered (e.g. status messages);
``room.broadcast_message(el)`` sends a built message to every occupant
(``el['from']`` must be set); ``room.publicise(occupant, codes=...)``
re-broadcasts an occupant's presence; ``room.set_affiliation(actor, jid,
aff, reason)`` and ``room.set_role(actor, occupant, role, reason)`` apply
privilege checks when ``actor`` (a real full JID) is not None.
``muc-registration-submitted`` jid, nick, form (submitted values), data
                             (affiliation data to store; may be extended)
"""
from xmppd.events import Event, Hooks  # noqa: F401  (re-exported: the MUC API)
from wokkel.data_form import Field
from twisted.logger import Logger

log = Logger()

__all__ = ["Event", "Hooks", "Feature"]


class Feature:
    """A room option: defaults for ``room.config`` plus hook registrations."""

    def __init__(self, name, defaults=None, install=None):
        self.name = name
        self.defaults = dict(defaults or {})
        self.install = install
        self.handlers = []   # (event, fn, priority)

    def hook(self, event_name, priority=0):
        def deco(fn):
            self.handlers.append((event_name, fn, priority))
            return fn
        return deco

    def boolean_option(self, key, var, label, desc, priority, disco, on_change=None):
        """Declare the usual on/off room option in one call: a boolean field in the
        config form, a submit handler that stores ``room.config[key]`` (status 104
        when it changed, then ``on_change(event, value)``), and the disco#info
        feature ``disco[0]`` when on or ``disco[1]`` when off."""
        self.defaults.setdefault(key, False)

        def form(event):
            event.form.append(Field("boolean", var=var, label=label, desc=desc,
                                    value=bool(event.room.config.get(key))))

        def submitted(event):
            value = bool(event.value)
            if not event.room.set_config(key, value):
                return
            event.status_codes.add("104")
            if on_change is not None:
                on_change(event, value)

        def info(event):
            event.features.add(disco[0] if event.room.config.get(key) else disco[1])

        self.hook("muc-config-form", priority)(form)
        self.hook("muc-config-submitted/" + var)(submitted)
        self.hook("muc-disco#info")(info)

    def on_install(self, fn):
        self.install = fn
        return fn

    def register(self, hooks):
        for name, fn, priority in self.handlers:
            hooks.add(name, fn, priority)
