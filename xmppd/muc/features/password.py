"""Password-protected rooms (muc#roomconfig_passwordprotectedroom + roomsecret; XEP-0045 §7.2.6).

Joining without the right ``<password/>`` in the MUC ``<x/>`` gets
not-authorized (auth). The creator may set the password in the join that
creates the room (as Prosody allows). Forms may carry only the secret
(Prosody's form) or both fields (the XEP's form): the boolean, when
present, wins; "protected" with no secret at all is refused.
The invites feature adds the password to mediated invitations.
"""
from wokkel.data_form import Field

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import NS_MUC

feature = Feature("password", defaults={"password": ""})

F_PROTECTED = "muc#roomconfig_passwordprotectedroom"
F_SECRET = "muc#roomconfig_roomsecret"


def join_password(stanza):
    """The password of a join presence (None when absent or empty)."""
    for x in stanza.elements():
        if x.name == "x" and x.uri == NS_MUC:
            for c in x.elements():
                if c.name == "password" and c.uri == NS_MUC:
                    return str(c) or None
    return None


@feature.hook("muc-config-form", priority=88)
def _form(event):
    password = event.room.config.get("password") or ""
    event.form.append(Field("boolean", var=F_PROTECTED, label="Password required to enter",
                            value=bool(password)))
    event.form.append(Field("text-private", var=F_SECRET, label="Password", value=password))


@feature.hook("muc-config-submitted", priority=10)
def _submitted(event):
    form = event.form
    if F_PROTECTED not in form and F_SECRET not in form:
        return
    room = event.room
    current = room.config.get("password") or ""
    # a roomsecret field with no <value/> is an empty password: it clears it
    new = (form.get(F_SECRET) or "") if F_SECRET in form else current
    protected = form.get(F_PROTECTED)
    if protected is False:
        new = ""
    elif protected is True and not new:
        raise stanza_error("not-acceptable", "modify",
                           "A password-protected room needs a password")
    if room.set_config("password", new or ""):
        event.status_codes.add("104")


@feature.hook("muc-room-pre-create")
def _initial(event):
    password = join_password(event.stanza)
    if password:
        event.room.config["password"] = password


@feature.hook("muc-occupant-pre-join", priority=-20)
def _check(event):
    room = event.room
    password = room.config.get("password")
    if not password or event.is_new_room:
        return
    if join_password(event.stanza) != password:
        raise stanza_error("not-authorized", "auth", "A password is required to enter this room")


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add("muc_passwordprotected" if event.room.config.get("password")
                       else "muc_unsecured")
