"""MUC room options that a scansion script cannot pin down exactly.

Scansion's ``receives`` passes over stanzas that do not match, so it cannot
prove that a message was *not* sent; these tests read every stanza a client
gets between its self-presence and the subject (where XEP-0045 §7.2.14 puts
the history), and drive the server-admin ad-hoc commands, which need a
server started with ``--admin``.
"""
import asyncio
import xml.etree.ElementTree as ET

import pytest

from xmppd.testing.client import Client, to_wire

CLIENT = "jabber:client"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_OWNER = MUC + "#owner"
DATA = "jabber:x:data"
DELAY = "urn:xmpp:delay"
COMMANDS = "http://jabber.org/protocol/commands"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
TIMEOUT = 5.0


def stanza(xml):
    """Parse a stanza written without namespace declarations as jabber:client."""
    i = xml.index(" ") if " " in xml.split(">", 1)[0] else xml.index(">")
    return ET.fromstring(xml[:i] + f" xmlns='{CLIENT}'" + xml[i:])


def q(tag, ns=CLIENT):
    return f"{{{ns}}}{tag}"


async def login(server, user):
    c = Client(user, f"{user}@localhost", "password", server.host, server.port, timeout=TIMEOUT)
    await c.connect()
    return c


async def wait_for(client, pred, what):
    """Return (skipped, match): every stanza up to the first one satisfying ``pred``."""
    skipped = []
    while True:
        el = await client.next_stanza(TIMEOUT)
        assert el is not None, f"{client.name}: timed out waiting for {what}; got {[to_wire(e) for e in skipped]}"
        if pred(el):
            return skipped, el
        skipped.append(el)


def is_subject(el):
    return el.tag == q("message") and el.find(q("subject")) is not None and el.find(q("body")) is None


def is_self_presence(el):
    x = el.find(q("x", MUC_USER))
    return el.tag == q("presence") and x is not None and \
        any(s.get("code") == "110" for s in x.findall(q("status", MUC_USER)))


def is_result(iq_id):
    return lambda el: el.tag == q("iq") and el.get("id") == iq_id


async def create_room(client, room, fields=()):
    """Join ``room`` (creating it) and submit the configuration form with ``fields``."""
    client.send(stanza(f"<presence to='{room}/{client.name}'><x xmlns='{MUC}'/></presence>"))
    await wait_for(client, is_subject, "the subject after creating the room")
    await configure(client, room, fields)


async def configure(client, room, fields, expect="result"):
    body = "".join(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in
                                                    (vals if isinstance(vals, list) else [vals]))
                   + "</field>" for var, vals in fields)
    client.send(stanza(
        f"<iq type='set' id='cfg' to='{room}'><query xmlns='{MUC_OWNER}'>"
        f"<x xmlns='{DATA}' type='submit'><field var='FORM_TYPE'>"
        f"<value>{MUC}#roomconfig</value></field>{body}</x></query></iq>"))
    _, reply = await wait_for(client, is_result("cfg"), "the configuration result")
    assert reply.get("type") == expect, to_wire(reply)
    return reply


async def say(client, room, text, extra=""):
    client.send(stanza(f"<message type='groupchat' to='{room}' id='{text}'>"
                       f"<body>{text}</body>{extra}</message>"))
    await wait_for(client, lambda el: el.tag == q("message") and el.get("id") == text, text)


async def join_history(client, room, nick, history=None):
    """Join with an optional <history/> attribute dict; return the history bodies received."""
    h = ""
    if history is not None:
        h = "<history " + " ".join(f"{k}='{v}'" for k, v in history.items()) + "/>"
    client.send(stanza(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{h}</x></presence>"))
    await wait_for(client, is_self_presence, "self-presence")
    between, _ = await wait_for(client, is_subject, "the subject")
    bodies = []
    for el in between:
        assert el.tag == q("message") and el.get("type") == "groupchat", to_wire(el)
        delay = el.find(q("delay", DELAY))
        assert delay is not None and delay.get("from") == room, to_wire(el)
        bodies.append(el.findtext(q("body")))
    return bodies


async def leave(client, room, nick):
    client.send(stanza(f"<presence type='unavailable' to='{room}/{nick}'/>"))
    await wait_for(client, lambda el: el.tag == q("presence") and el.get("type") == "unavailable"
                   and el.get("from") == f"{room}/{nick}", "own unavailable presence")


def run(coro):
    return asyncio.run(coro)


def test_history_limits(xmppd_server):
    """maxstanzas, maxchars, since, seconds and hints decide exactly what is replayed."""
    async def scenario():
        room = "limits@conference.localhost"
        owner = await login(xmppd_server, "histowner")
        await create_room(owner, room)
        for i in range(1, 6):
            await say(owner, room, f"m{i}")
        # not history: a no-store hint, and a message with no body (a chat state)
        await say(owner, room, "secret", "<no-store xmlns='urn:xmpp:hints'/>")
        owner.send(stanza(f"<message type='groupchat' to='{room}' id='cs'>"
                          "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"))
        await wait_for(owner, lambda el: el.get("id") == "cs", "chat state")

        guest = await login(xmppd_server, "histguest")
        everything = ["m1", "m2", "m3", "m4", "m5"]
        assert await join_history(guest, room, "g") == everything
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"maxstanzas": 3}) == ["m3", "m4", "m5"]
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"maxstanzas": 0}) == []
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"maxchars": 0}) == []
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"since": "1970-01-01T00:00:00Z"}) == everything
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"since": "2999-01-01T00:00:00Z"}) == []
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"seconds": 3600}) == everything
        await leave(guest, room, "g")
        # the smallest result of all limits wins
        assert await join_history(guest, room, "g", {"seconds": 3600, "maxstanzas": 1}) == ["m5"]
        await leave(guest, room, "g")
        # maxchars counts whole stanzas: room for two and a half gives two
        guest.send(stanza(f"<presence to='{room}/g'><x xmlns='{MUC}'><history maxstanzas='1'/></x></presence>"))
        await wait_for(guest, is_self_presence, "self-presence")
        between, _ = await wait_for(guest, is_subject, "subject")
        size = len(to_wire(between[0]).encode()) + len(f" to='{guest.full_jid}'")
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"maxchars": int(size * 2.5)}) == ["m4", "m5"]
        await guest.disconnect()
        await owner.disconnect()
    run(scenario())


def test_history_length_config(xmppd_server_factory, tmp_path):
    """muc#roomconfig_historylength bounds what is kept; the service maximum bounds it."""
    conf = tmp_path / "xmppd.toml"
    conf.write_text("[muc]\nmuc_max_history = 4\nmuc_default_history = 3\n")
    server = xmppd_server_factory("--config", str(conf))

    async def scenario():
        room = "length@conference.localhost"
        owner = await login(server, "lenowner")
        await create_room(owner, room, [("muc#roomconfig_historylength", "100")])
        for i in range(1, 7):
            await say(owner, room, f"m{i}")
        guest = await login(server, "lenguest")
        # the service default (3) when the client asks for nothing; at most 4 are kept
        assert await join_history(guest, room, "g") == ["m4", "m5", "m6"]
        await leave(guest, room, "g")
        assert await join_history(guest, room, "g", {"maxstanzas": 50}) == ["m3", "m4", "m5", "m6"]
        await leave(guest, room, "g")
        # a shorter room setting drops older messages at once
        await configure(owner, room, [("muc#roomconfig_historylength", "2")])
        assert await join_history(guest, room, "g", {"maxstanzas": 50}) == ["m5", "m6"]
        await leave(guest, room, "g")
        await configure(owner, room, [("muc#roomconfig_historylength", "0")])
        await say(owner, room, "m7")
        assert await join_history(guest, room, "g", {"maxstanzas": 50}) == []
        await leave(guest, room, "g")
        # not a number: refused, nothing changed
        await configure(owner, room, [("muc#roomconfig_historylength", "many")], expect="error")
        await guest.disconnect()
        await owner.disconnect()
    run(scenario())


async def command(client, node, action=None, sessionid=None, form=None, iq_id="cmd"):
    attrs = f" node='{node}'"
    if action:
        attrs += f" action='{action}'"
    if sessionid:
        attrs += f" sessionid='{sessionid}'"
    client.send(stanza(f"<iq type='set' id='{iq_id}' to='conference.localhost'>"
                       f"<command xmlns='{COMMANDS}'{attrs}>{form or ''}</command></iq>"))
    _, reply = await wait_for(client, is_result(iq_id), f"command {node}")
    return reply


def test_admin_destroy_rooms_command(xmppd_server_factory):
    """A service admin lists the ad-hoc commands and destroys a room with one; others may not."""
    server = xmppd_server_factory("--admin", "boss@localhost")
    node = "http://prosody.im/protocol/muc#destroy"

    async def scenario():
        room = "doomed@conference.localhost"
        owner = await login(server, "roomowner")
        await create_room(owner, room)
        boss = await login(server, "boss")
        boss.send(stanza(f"<iq type='get' id='items' to='conference.localhost'>"
                         f"<query xmlns='{DISCO_ITEMS}' node='{COMMANDS}'/></iq>"))
        _, items = await wait_for(boss, is_result("items"), "command list")
        nodes = [i.get("node") for i in items.iter(q("item", DISCO_ITEMS))]
        assert node in nodes

        # an ordinary user sees no commands and may not run them
        owner.send(stanza(f"<iq type='get' id='items' to='conference.localhost'>"
                          f"<query xmlns='{DISCO_ITEMS}' node='{COMMANDS}'/></iq>"))
        _, items = await wait_for(owner, is_result("items"), "command list")
        assert list(items.iter(q("item", DISCO_ITEMS))) == []
        reply = await command(owner, node)
        assert reply.get("type") == "error"
        assert reply.find(q("error")).find("{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None

        reply = await command(boss, node)
        assert reply.get("type") == "result", to_wire(reply)
        cmd = reply.find(q("command", COMMANDS))
        assert cmd.get("status") == "executing"
        options = [v.text for v in cmd.iter(q("value", DATA))]
        assert room in options
        form = (f"<x xmlns='{DATA}' type='submit'><field var='FORM_TYPE'><value>{node}</value></field>"
                f"<field var='rooms'><value>{room}</value></field></x>")
        reply = await command(boss, node, "complete", cmd.get("sessionid"), form, "cmd2")
        cmd = reply.find(q("command", COMMANDS))
        assert cmd.get("status") == "completed", to_wire(reply)
        assert room in cmd.findtext(q("note", COMMANDS))
        # the occupant is told the room is gone
        _, gone = await wait_for(owner, lambda el: el.tag == q("presence")
                                 and el.get("type") == "unavailable", "room destruction")
        assert gone.find(q("x", MUC_USER)).find(q("destroy", MUC_USER)) is not None
        # and it no longer exists: a new join creates it afresh (201)
        owner.send(stanza(f"<presence to='{room}/again'><x xmlns='{MUC}'/></presence>"))
        _, me = await wait_for(owner, is_self_presence, "self-presence")
        assert "201" in [s.get("code") for s in me.iter(q("status", MUC_USER))]

        # cancel ends a command without doing anything
        reply = await command(boss, node, "cancel", "abc", iq_id="cmd3")
        assert reply.find(q("command", COMMANDS)).get("status") == "canceled"
        await boss.disconnect()
        await owner.disconnect()
    run(scenario())


def test_admin_set_affiliation_command(xmppd_server_factory):
    """The set-affiliation command changes an affiliation without being in the room."""
    server = xmppd_server_factory("--admin", "boss@localhost")
    node = "http://prosody.im/protocol/muc#set-affiliation"

    async def scenario():
        room = "affroom@conference.localhost"
        owner = await login(server, "affowner")
        await create_room(owner, room)
        boss = await login(server, "boss")
        form = (f"<x xmlns='{DATA}' type='submit'>"
                f"<field var='room'><value>{room}</value></field>"
                f"<field var='jid'><value>someone@localhost</value></field>"
                f"<field var='affiliation'><value>member</value></field></x>")
        reply = await command(boss, node, "complete", "s1", form)
        cmd = reply.find(q("command", COMMANDS))
        assert cmd.get("status") == "completed", to_wire(reply)
        # the owner (a moderator) is told about the new member
        _, note = await wait_for(owner, lambda el: el.tag == q("message")
                                 and el.find(q("x", MUC_USER)) is not None, "affiliation notice")
        item = note.find(q("x", MUC_USER)).find(q("item", MUC_USER))
        assert (item.get("jid"), item.get("affiliation")) == ("someone@localhost", "member")
        form = form.replace(room, "nosuchroom@conference.localhost")
        reply = await command(boss, node, "complete", "s2", form, "cmd2")
        assert reply.find(q("command", COMMANDS)).get("status") == "canceled"
        await boss.disconnect()
        await owner.disconnect()
    run(scenario())


@pytest.mark.parametrize("allow_pm,sender_role_ok", [("anyone", True), ("moderators", False),
                                                     ("none", False), ("participants", True)])
def test_allow_pm(xmppd_server, allow_pm, sender_role_ok):
    """muc#roomconfig_allowpm decides whether a participant's private message is delivered."""
    async def scenario():
        room = "pm@conference.localhost"
        owner = await login(xmppd_server, "pmowner")
        await create_room(owner, room, [("muc#roomconfig_allowpm", allow_pm)])
        guest = await login(xmppd_server, "pmguest")
        await join_history(guest, room, "guest")
        guest.send(stanza(f"<message type='chat' id='pm1' to='{room}/pmowner'><body>psst</body></message>"))
        if sender_role_ok:
            _, msg = await wait_for(owner, lambda el: el.get("id") == "pm1", "private message")
            assert msg.get("from") == f"{room}/guest" and msg.findtext(q("body")) == "psst"
        else:
            _, err = await wait_for(guest, lambda el: el.get("id") == "pm1", "error")
            assert err.get("type") == "error"
            assert err.find(q("error")).find("{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None
        await guest.disconnect()
        await owner.disconnect()
    run(scenario())


def test_max_occupants(xmppd_server_factory, tmp_path):
    """A full room refuses newcomers with service-unavailable (wait); admins still get in."""
    conf = tmp_path / "xmppd.toml"
    conf.write_text("[muc]\nmuc_max_occupants = 2\n")
    server = xmppd_server_factory("--config", str(conf))

    async def scenario():
        room = "full@conference.localhost"
        owner = await login(server, "fullowner")
        await create_room(owner, room)
        # the form offers no more than the service allows
        owner.send(stanza(f"<iq type='get' id='form' to='{room}'><query xmlns='{MUC_OWNER}'/></iq>"))
        _, form = await wait_for(owner, is_result("form"), "config form")
        field = [f for f in form.iter(q("field", DATA)) if f.get("var") == "muc#roomconfig_maxusers"][0]
        assert [o.findtext(q("value", DATA)) for o in field.findall(q("option", DATA))] == ["2"]
        owner.send(stanza(f"<iq type='set' id='adm' to='{room}'><query xmlns='{MUC}#admin'>"
                          "<item affiliation='admin' jid='fulladmin@localhost'/></query></iq>"))
        await wait_for(owner, is_result("adm"), "admin grant")
        first = await login(server, "fullfirst")
        await join_history(first, room, "first")
        late = await login(server, "fulllate")
        late.send(stanza(f"<presence id='j' to='{room}/late'><x xmlns='{MUC}'/></presence>"))
        _, err = await wait_for(late, lambda el: el.get("id") == "j", "join error")
        assert err.get("type") == "error"
        error = err.find(q("error"))
        assert error.get("type") == "wait"
        assert error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
        admin = await login(server, "fulladmin")
        assert await join_history(admin, room, "admin") == []
        # a place frees up when someone leaves
        await leave(first, room, "first")
        await leave(admin, room, "admin")
        assert await join_history(late, room, "late") == []
        for c in (late, admin, first, owner):
            await c.disconnect()
    run(scenario())


def test_persistent_room_options_survive_restart(xmppd_server_factory, tmp_path):
    """A persistent room keeps its options and subject across a restart; its history does not."""
    data = tmp_path / "persist"
    server = xmppd_server_factory(data_dir=data)
    room = "keep@conference.localhost"

    async def before():
        owner = await login(server, "keepowner")
        await create_room(owner, room, [("muc#roomconfig_persistentroom", "1"),
                                        ("muc#roomconfig_roomname", "Kept"),
                                        ("muc#roomconfig_roomsecret", "s3cret"),
                                        ("muc#roomconfig_changesubject", "1")])
        owner.send(stanza(f"<message type='groupchat' to='{room}' id='s'><subject>Still here</subject></message>"))
        await wait_for(owner, lambda el: el.get("id") == "s" or is_subject(el), "subject echo")
        await say(owner, room, "ephemeral")
        await owner.disconnect()
    run(before())
    server.stop()
    server = xmppd_server_factory(data_dir=data)

    async def after():
        guest = await login(server, "keepguest")
        guest.send(stanza(f"<iq type='get' id='info' to='{room}'>"
                          "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
        _, info = await wait_for(guest, is_result("info"), "disco#info")
        ns = "http://jabber.org/protocol/disco#info"
        assert info.find(q("query", ns)).find(q("identity", ns)).get("name") == "Kept"
        features = {f.get("var") for f in info.iter(q("feature", ns))}
        assert {"muc_persistent", "muc_passwordprotected"} <= features
        guest.send(stanza(f"<presence id='j' to='{room}/g'><x xmlns='{MUC}'/></presence>"))
        _, err = await wait_for(guest, lambda el: el.get("id") == "j", "refusal")
        assert err.get("type") == "error"
        guest.send(stanza(f"<presence to='{room}/g'><x xmlns='{MUC}'><password>s3cret</password></x></presence>"))
        await wait_for(guest, is_self_presence, "self-presence")
        between, subject = await wait_for(guest, is_subject, "subject")
        assert subject.findtext(q("subject")) == "Still here"
        assert subject.get("from") == f"{room}/keepowner"
        assert [el for el in between if el.tag == q("message")] == []
        await guest.disconnect()
    run(after())


def test_config_form_round_trip_changes_nothing(xmppd_server):
    """Submitting the form exactly as received (what clients do) is accepted and announces nothing."""
    async def scenario():
        room = "roundtrip@conference.localhost"
        owner = await login(xmppd_server, "rtowner")
        await create_room(owner, room, [("muc#roomconfig_roomsecret", "pw"),
                                        ("muc#roomconfig_maxusers", "20")])
        owner.send(stanza(f"<iq type='get' id='form' to='{room}'><query xmlns='{MUC_OWNER}'/></iq>"))
        _, reply = await wait_for(owner, is_result("form"), "config form")
        form = reply.find(q("query", MUC_OWNER)).find(q("x", DATA))
        submit = ET.Element(q("x", DATA), {"type": "submit"})
        for field in form.findall(q("field", DATA)):
            if not field.get("var"):
                continue
            f = ET.SubElement(submit, q("field", DATA), {"var": field.get("var")})
            for v in field.findall(q("value", DATA)):
                ET.SubElement(f, q("value", DATA)).text = v.text
        iq = stanza(f"<iq type='set' id='rt' to='{room}'><query xmlns='{MUC_OWNER}'/></iq>")
        iq.find(q("query", MUC_OWNER)).append(submit)
        owner.send(iq)
        _, result = await wait_for(owner, is_result("rt"), "submit result")
        assert result.get("type") == "result", to_wire(result)
        owner.send(stanza(f"<message type='groupchat' to='{room}' id='after'><body>x</body></message>"))
        skipped, _ = await wait_for(owner, lambda el: el.get("id") == "after", "own message")
        assert [to_wire(el) for el in skipped if el.tag == q("message")] == []
        await owner.disconnect()
    run(scenario())


def test_password_given_when_creating_the_room(xmppd_server):
    """The creator's join password becomes the room password (as Prosody does)."""
    async def scenario():
        room = "createpw@conference.localhost"
        owner = await login(xmppd_server, "cpowner")
        owner.send(stanza(f"<presence to='{room}/o'><x xmlns='{MUC}'><password>open sesame</password></x></presence>"))
        await wait_for(owner, is_subject, "subject")
        await configure(owner, room, [])
        guest = await login(xmppd_server, "cpguest")
        guest.send(stanza(f"<presence id='j1' to='{room}/g'><x xmlns='{MUC}'/></presence>"))
        _, err = await wait_for(guest, lambda el: el.get("id") == "j1", "refusal")
        cond = err.find(q("error"))
        assert cond.get("type") == "auth" and cond.get("by") == room
        assert cond.find("{urn:ietf:params:xml:ns:xmpp-stanzas}not-authorized") is not None
        # a presence without the MUC <x/> must not slip past the password either
        # (it is an error, or the "you are not in the room" answer to a desynced client)
        guest.send(stanza(f"<presence id='j2' to='{room}/g'/>"))
        _, err = await wait_for(guest, lambda el: el.tag == q("presence")
                                and el.get("from") == f"{room}/g", "refusal")
        assert err.get("type") in ("error", "unavailable"), to_wire(err)
        guest.send(stanza(f"<presence to='{room}/g'><x xmlns='{MUC}'><password>open sesame</password></x></presence>"))
        await wait_for(guest, is_self_presence, "self-presence")
        await guest.disconnect()
        await owner.disconnect()
    run(scenario())


def test_invite_to_unknown_local_user_is_item_not_found(xmppd_server):
    """XEP-0045 §7.8.2: a non-existent invitee gets item-not-found back to the inviter."""
    async def scenario():
        room = "invunknown@conference.localhost"
        owner = await login(xmppd_server, "iuowner")
        await create_room(owner, room)
        owner.send(stanza(f"<message to='{room}' id='i1'><x xmlns='{MUC_USER}'>"
                          "<invite to='nobody-ever-logged-in@localhost'/></x></message>"))
        _, err = await wait_for(owner, lambda el: el.get("id") == "i1", "invite error")
        assert err.get("type") == "error"
        assert err.find(q("error")).find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
        await owner.disconnect()
    run(scenario())


def test_every_config_form_field_and_option_has_a_label(xmppd_server):
    """Clients print option labels (profanity showed "(null)" for presencebroadcast, poezio blanks)."""
    async def scenario():
        room = "labels@conference.localhost"
        owner = await login(xmppd_server, "lblowner")
        await create_room(owner, room)
        owner.send(stanza(f"<iq type='get' id='form' to='{room}'><query xmlns='{MUC_OWNER}'/></iq>"))
        _, reply = await wait_for(owner, is_result("form"), "config form")
        form = reply.find(q("query", MUC_OWNER)).find(q("x", DATA))
        fields = [f for f in form.findall(q("field", DATA)) if f.get("type") != "hidden"]
        assert len(fields) > 10, to_wire(reply)
        unlabelled = [f.get("var") for f in fields if not (f.get("label") or "").strip()]
        assert unlabelled == [], unlabelled
        options = [(f.get("var"), o) for f in fields for o in f.findall(q("option", DATA))]
        assert any(var == "muc#roomconfig_presencebroadcast" for var, _ in options)
        bare = [(var, o.findtext(q("value", DATA))) for var, o in options
                if not (o.get("label") or "").strip()]
        assert bare == [], bare
        await owner.disconnect()
    run(scenario())


def test_occupant_id_cannot_be_forged(xmppd_server):
    """XEP-0421 §4: a client's own <occupant-id/> never survives; each copy carries exactly one."""
    OID = "urn:xmpp:occupant-id:0"

    async def scenario():
        room = "forge@conference.localhost"
        owner = await login(xmppd_server, "forgeowner")
        await create_room(owner, room)
        guest = await login(xmppd_server, "forgeguest")
        guest.send(stanza(f"<presence to='{room}/g'><occupant-id xmlns='{OID}' id='fake'/>"
                          f"<x xmlns='{MUC}'/></presence>"))
        await wait_for(guest, is_subject, "the subject")
        _, p = await wait_for(owner, lambda el: el.tag == q("presence") and el.get("from") == f"{room}/g",
                              "the guest's presence")
        ids = [e.get("id") for e in p.findall(q("occupant-id", OID))]
        assert len(ids) == 1 and ids[0] != "fake", to_wire(p)
        guest.send(stanza(f"<message type='groupchat' to='{room}' id='m'><body>hi</body>"
                          f"<occupant-id xmlns='{OID}' id='fake'/><occupant-id xmlns='{OID}' id='x'/>"
                          f"</message>"))
        _, m = await wait_for(owner, lambda el: el.get("id") == "m", "the guest's message")
        assert [e.get("id") for e in m.findall(q("occupant-id", OID))] == ids, to_wire(m)
        await guest.disconnect()
        await owner.disconnect()
    run(scenario())
