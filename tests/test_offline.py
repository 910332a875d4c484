"""Offline messages (XEP-0160, RFC 6121 §8.5.2.1.1) against a real server over sockets."""
import re
import signal

from test_c2s_raw import C, Raw, stanza_error

DELAY = "{urn:xmpp:delay}delay"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def login(server, user, presence=None):
    c = Raw(server.port)
    c.login(user, "pw", resource="r")
    if presence is not None:
        c.send(presence)
    return c


def sync(c):
    """Round-trip a ping so everything sent before it has been processed."""
    c.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        el = c.next()
        if el.tag == f"{C}iq" and el.get("id") == "sync":
            return


def messages(c, wait=0.5):
    """Every message that arrives within ``wait`` seconds (presences are skipped)."""
    out = []
    try:
        while True:
            el = c.next(wait)
            if el.tag == f"{C}message":
                out.append(el)
    except AssertionError:
        return out


def make_account(server, user):
    login(server, user).close()   # --insecure-auth creates it on first login


def test_stored_and_delivered_once_with_a_delay_stamp(xmppd_server):
    make_account(xmppd_server, "juliet")
    romeo = login(xmppd_server, "romeo")
    for i, mtype in enumerate(("chat", None, "normal")):
        t = f" type='{mtype}'" if mtype else ""
        romeo.send(f"<message to='juliet@localhost'{t} id='m{i}'><body>hi {i}</body></message>")
    romeo.send("<message to='juliet@localhost/gone' type='chat' id='m3'><body>to a resource</body></message>")
    romeo.send("<message to='juliet@localhost' type='headline' id='h'><body>news</body></message>")
    sync(romeo)
    romeo.nothing()                    # stored: no error for the sender

    juliet = login(xmppd_server, "juliet")
    juliet.nothing()                   # nothing before initial presence
    juliet.send("<presence/>")
    got = messages(juliet)
    assert [m.get("id") for m in got] == ["m0", "m1", "m2", "m3"]
    for m in got:
        assert m.get("from") == "romeo@localhost/r"
        delay = m.find(DELAY)
        assert delay is not None and delay.get("from") == "localhost"
        assert STAMP.match(delay.get("stamp")), delay.get("stamp")
    assert got[0].find(f"{C}body").text == "hi 0"
    assert got[1].get("type") is None and got[2].get("type") == "normal"

    # Delivered means gone: the next session gets nothing.
    juliet.close()
    again = login(xmppd_server, "juliet", presence="<presence/>")
    assert messages(again) == []


def test_unknown_account_and_contentless_messages(xmppd_server):
    romeo = login(xmppd_server, "romeo")
    romeo.send("<message to='nobody@localhost' type='chat' id='u'><body>x</body></message>")
    el = romeo.next()
    assert el.get("id") == "u" and stanza_error(el) == ("cancel", "service-unavailable")

    make_account(xmppd_server, "quiet")
    romeo.send("<message to='quiet@localhost' type='chat' id='cs'>"
               "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    romeo.send("<message to='quiet@localhost' type='chat' id='ns'><body>secret</body>"
               "<no-store xmlns='urn:xmpp:hints'/></message>")
    romeo.send("<message to='quiet@localhost' type='chat' id='keep'><body>keep me</body>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    sync(romeo)
    romeo.nothing()                    # dropped silently, not bounced
    quiet = login(xmppd_server, "quiet", presence="<presence/>")
    assert [m.get("id") for m in messages(quiet)] == ["keep"]


def test_per_account_bound_then_service_unavailable(xmppd_server_factory, tmp_path):
    cfg = tmp_path / "xmppd.toml"
    cfg.write_text("max_offline_messages = 2\n")
    server = xmppd_server_factory("--config", cfg)
    make_account(server, "full")
    romeo = login(server, "romeo")
    for i in range(3):
        romeo.send(f"<message to='full@localhost' type='chat' id='b{i}'><body>{i}</body></message>")
    el = romeo.next()
    assert el.get("id") == "b2" and el.get("from") == "full@localhost"
    assert stanza_error(el) == ("cancel", "service-unavailable")
    full = login(server, "full", presence="<presence/>")
    assert [m.get("id") for m in messages(full)] == ["b0", "b1"]
    full.close()
    # Delivery frees the space again.
    romeo.send("<message to='full@localhost' type='chat' id='b3'><body>3</body></message>")
    sync(romeo)
    romeo.nothing()


def test_negative_priority_defers_delivery_until_it_is_raised(xmppd_server):
    make_account(xmppd_server, "shy")
    romeo = login(xmppd_server, "romeo")
    romeo.send("<message to='shy@localhost' type='chat' id='p'><body>x</body></message>")
    sync(romeo)
    shy = login(xmppd_server, "shy", presence="<presence><priority>-1</priority></presence>")
    assert messages(shy) == []
    # Still no available non-negative resource: new messages are stored too.
    romeo.send("<message to='shy@localhost' type='chat' id='q'><body>y</body></message>")
    sync(romeo)
    shy.send("<presence><priority>5</priority></presence>")
    assert [m.get("id") for m in messages(shy)] == ["p", "q"]


def test_stored_messages_survive_sigkill(xmppd_server_factory, tmp_path):
    data = tmp_path / "data"
    server = xmppd_server_factory(data_dir=data)
    make_account(server, "later")
    romeo = login(server, "romeo")
    romeo.send("<message to='later@localhost' type='chat' id='k'><body>after the crash</body></message>")
    sync(romeo)        # the ping answer comes after the message was stored
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    romeo.close()
    server = xmppd_server_factory(data_dir=data)
    later = login(server, "later", presence="<presence/>")
    got = messages(later)
    assert [m.get("id") for m in got] == ["k"]
    assert got[0].find(f"{C}body").text == "after the crash"


def test_stored_messages_come_before_a_live_one_sent_meanwhile(xmppd_server):
    """RFC 6120 §10.1: the stored messages are read off the reactor; a message routed to the
    session while they are read (here in the same packet as the initial presence) must not
    overtake them."""
    make_account(xmppd_server, "mia")
    romeo = login(xmppd_server, "romeo")
    for i in range(30):
        romeo.send(f"<message to='mia@localhost' type='chat' id='s{i}'><body>stored {i}</body></message>")
    sync(romeo)
    mia = login(xmppd_server, "mia")
    mia.send("<presence/><message to='mia@localhost' type='chat' id='live'><body>now</body></message>")
    got = messages(mia)
    assert [m.get("id") for m in got] == [f"s{i}" for i in range(30)] + ["live"]
    assert got[-1].find(DELAY) is None
