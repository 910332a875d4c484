"""Faults: clients vanishing at every step of login and room join, and SIGTERM.

A client that disappears (TCP reset, no footer) at any point must leave no
ghost session (an IQ to its full JID bounces, the same resource binds again
without a conflict) and no ghost occupant (the room announces it left, the
occupant lists no longer contain it, the nick is free again).
"""
import socket
import struct
import time
import xml.etree.ElementTree as ET

import pytest

from test_c2s_raw import C, NS_SASL, Raw, start_server
from test_hardening import (open_clients, NS_MUC_ADMIN, NS_MUC_USER, alive, by_id, create_instant_room,
                            error_condition, expect, iq, join, login, ping)

MUC = "conference.localhost"


def reset(c):
    """Vanish: RST instead of a clean close (no footer, no FIN handshake)."""
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    c.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth", config="muc_message_rate = 0\n")
    yield srv
    srv.stop()


@pytest.fixture
def clients(server):
    yield from open_clients(server.port)


def _until(fn, timeout=5.0):
    """Poll ``fn`` until it returns a truthy value (the server handles the reset asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.1)


def no_session(checker, full):
    """An IQ to ``full`` bounces with service-unavailable: nothing is bound there."""
    def probe():
        r = iq(checker, "<ping xmlns='urn:xmpp:ping'/>", full)
        return r.get("type") == "error" and error_condition(r)[1] == "service-unavailable"
    return _until(probe)


LOGIN_STEPS = ["tcp", "header", "starttls", "tls", "auth-sent", "authenticated", "restarted",
               "bind-sent", "bound", "available", "directed-presence"]


def _login_until(port, user, resource, step):
    c = Raw(port)
    if step == "tcp":
        return c
    c.open()
    if step == "header":
        return c
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    if step == "starttls":
        return c
    c.next()
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    c.open()
    if step == "tls":
        return c
    import base64
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>"
           + base64.b64encode(f"\0{user}\0pw".encode()).decode() + "</auth>")
    if step == "auth-sent":
        return c
    c.next()
    if step == "authenticated":
        return c
    c.open()
    if step == "restarted":
        return c
    c.send(f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           f"<resource>{resource}</resource></bind></iq>")
    if step == "bind-sent":
        return c
    c.next()
    if step == "bound":
        return c
    c.send("<presence/>")
    return c


@pytest.mark.parametrize("step", LOGIN_STEPS)
def test_vanishing_during_login_leaves_no_ghost_session(server, clients, step):
    user, resource = f"ghost-{step}", "same"
    full = f"{user}@localhost/{resource}"
    checker = clients("ghostchecker", resource=step)
    c = _login_until(server.port, user, resource, step)
    if step == "directed-presence":
        c.send(f"<presence to='{checker.full}'/>")
        expect(checker, lambda e: e.get("from") == full and e.tag == f"{C}presence")
    time.sleep(0.05)
    reset(c)
    if step == "directed-presence":
        el = expect(checker, lambda e: e.get("from") == full and e.tag == f"{C}presence")
        assert el.get("type") == "unavailable"
    assert no_session(checker, full), f"{full} still has a session after a reset at {step}"
    # the same resource binds again, without a conflict for anybody
    again = clients(user, resource=resource)
    assert again.full == full
    again.nothing(0.3)
    assert ping(again).get("type") == "result"
    alive(server)


JOIN_STEPS = ["join-sent", "joined", "after-subject", "nick-change-sent", "message-sent",
              "presence-update-sent"]


@pytest.mark.parametrize("step", JOIN_STEPS)
def test_vanishing_during_room_join_leaves_no_ghost_occupant(server, clients, step):
    room = f"ghosts-{step}@{MUC}"
    owner = clients("ghostowner", resource=step)
    create_instant_room(owner, room, "Owner")
    c = login(server.port, f"joiner-{step}", "r")
    nick = "Ghost"
    c.send(f"<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    if step != "join-sent":
        expect(c, lambda e: e.get("from") == f"{room}/{nick}" and e.tag == f"{C}presence")
        expect(owner, lambda e: e.get("from") == f"{room}/{nick}" and e.tag == f"{C}presence")
    if step in ("after-subject", "nick-change-sent", "message-sent", "presence-update-sent"):
        expect(c, lambda e: e.find(f"{C}subject") is not None)
    if step == "nick-change-sent":
        c.send(f"<presence to='{room}/Ghost2'/>")
    elif step == "message-sent":
        c.send(f"<message to='{room}' type='groupchat'><body>last words</body></message>")
    elif step == "presence-update-sent":
        c.send(f"<presence to='{room}/{nick}'><show>away</show></presence>")
    time.sleep(0.05)
    reset(c)

    def occupants():
        nicks = set()
        for r in ("moderator", "participant", "visitor"):
            res = iq(owner, f"<query xmlns='{NS_MUC_ADMIN}'><item role='{r}'/></query>", room)
            assert res.get("type") == "result", ET.tostring(res)
            nicks |= {i.get("nick") for i in res.iter(f"{{{NS_MUC_ADMIN}}}item")}
        return nicks

    assert _until(lambda: occupants() == {"Owner"}), occupants()
    # the nick is free: somebody else takes it without a conflict
    other = clients(f"taker-{step}")
    el = join(other, room, nick)
    assert el.get("type") != "error", ET.tostring(el)
    # and the vanished user can come back under its old nick too
    back = clients(f"joiner-{step}", resource="back")
    el = join(back, room, "Ghost2")
    assert el.get("type") != "error", ET.tostring(el)
    alive(server)


def test_vanishing_occupant_announced_as_unavailable(server, clients):
    room = f"announce@{MUC}"
    owner = clients("announcer")
    create_instant_room(owner, room, "Owner")
    c = login(server.port, "leaver", "r")
    join(c, room, "Leaver")
    expect(owner, lambda e: e.get("from") == f"{room}/Leaver" and e.get("type") is None)
    reset(c)
    el = expect(owner, lambda e: e.get("from") == f"{room}/Leaver")
    assert el.get("type") == "unavailable"
    item = el.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item")
    assert item.get("role") == "none"


def test_vanishing_during_password_check(tmp_path_factory):
    """Reset while the (threaded) password check runs: no session, no crash."""
    from test_hardening_limits import PASSWORD, real_server
    srv = real_server(tmp_path_factory, "", ("slowpoke",))
    try:
        for _ in range(3):
            c = Raw(srv.port)
            c.open(); c.starttls()
            import base64
            c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>"
                   + base64.b64encode(f"\0slowpoke\0{PASSWORD}".encode()).decode() + "</auth>")
            reset(c)
        time.sleep(0.5)
        c = Raw(srv.port)
        c.login("slowpoke", password=PASSWORD, resource="r")
        assert ping(c).get("type") == "result"
        c.close()
        assert "Traceback" not in srv.log(), srv.log()
    finally:
        srv.stop()


# -- SIGTERM -------------------------------------------------------------------------------

def test_sigterm_sends_system_shutdown_to_every_client_and_keeps_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("shutdown")
    from conftest import XmppdServer
    args = ["--c2s-port", "0", "--data-dir", str(data_dir), "--insecure-auth"]
    srv = XmppdServer(args, data_dir).wait_listening()
    room = f"durable@{MUC}"
    clients = []
    try:
        owner = login(srv.port, "keeper", "r")
        clients.append(owner)
        create_instant_room(owner, room, "Keeper")
        r = iq(owner, "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
                      "type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig"
                      "</value></field><field var='muc#roomconfig_persistentroom'><value>1</value>"
                      "</field></x></query>", room, "set")
        assert r.get("type") == "result"
        r = iq(owner, f"<query xmlns='{NS_MUC_ADMIN}'><item jid='friend@localhost' affiliation='member'/>"
                      "</query>", room, "set")
        assert r.get("type") == "result"
        for i in range(3):
            clients.append(login(srv.port, f"user{i}", "r"))
        pre = Raw(srv.port)           # not yet authenticated
        pre.open()
        clients.append(pre)
        srv.proc.terminate()
        for c in clients:
            assert b"<system-shutdown" in c.raw or _shutdown(c), c.raw[-300:]
        assert srv.proc.wait(10) in (0, -15)
    finally:
        for c in clients:
            c.close()
        srv.stop()
    # storage was flushed: the persistent room and its member are there after a restart
    srv = XmppdServer(args, data_dir).wait_listening()
    try:
        c = login(srv.port, "keeper", "again")
        r = iq(c, f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='member'/></query>", room)
        assert [i.get("jid") for i in r.iter(f"{{{NS_MUC_ADMIN}}}item")] == ["friend@localhost"]
        c.close()
    finally:
        srv.stop()


def _shutdown(c):
    """Skip what is still in flight (e.g. the room's goodbye) up to the stream error."""
    try:
        expect(c, lambda e: e.tag == "{http://etherx.jabber.org/streams}error")
    except AssertionError:
        return False
    c.wait_closed()
    return b"<system-shutdown" in c.raw and c.footer
