"""XEP-0352 Client State Indication over real sockets: an inactive client in a room of 50
gets the held presence, in order, when it becomes active; important stanzas flush first."""
import time
import xml.etree.ElementTree as ET

from test_c2s_raw import C, Raw
from test_offline import messages, sync
from test_sm import NS as NS_SM, SMClient

NS = "urn:xmpp:csi:0"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
ROOM = "busy@conference.localhost"


def join(c, nick, room=ROOM):
    """Join and read until the subject: returns the elements seen."""
    c.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>")
    seen = []
    while True:
        el = c.next()
        seen.append(el)
        if el.tag == f"{C}message" and el.find(f"{C}subject") is not None:
            return seen


def test_feature_and_fifty_occupants_held_until_active(xmppd_server):
    obs = Raw(xmppd_server.port)
    obs.open()
    obs.starttls()
    obs.auth("observer", "pw")
    feats = obs.open()
    assert feats.find(f"{{{NS}}}csi") is not None
    obs.bind("r")
    join(obs, "observer")
    obs.send(f"<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{MUC}#owner'>"
             f"<x xmlns='jabber:x:data' type='submit'/></query></iq>")   # instant room
    while obs.next().get("id") != "cfg":
        pass
    obs.send(f"<inactive xmlns='{NS}'/>")
    others = []
    for i in range(49):
        c = Raw(xmppd_server.port)
        c.login(f"occ{i}", "pw")
        join(c, f"nick{i:02d}")
        others.append(c)
    # One occupant changes status twice: only the newest state is kept.
    others[3].send(f"<presence to='{ROOM}/nick03'><show>away</show></presence>")
    others[3].send(f"<presence to='{ROOM}/nick03'><show>dnd</show></presence>")
    sync(others[3])
    obs.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
    # The IQ result is important: it flushes everything held before it, in order.
    obs.send(f"<active xmlns='{NS}'/>")
    got = []
    while True:
        el = obs.next()
        got.append(el)
        if el.tag == f"{C}iq":
            break
    pres = [e for e in got if e.tag == f"{C}presence"]
    nicks = [e.get("from").split("/")[1] for e in pres]
    expected = [f"nick{i:02d}" for i in range(49) if i != 3] + ["nick03"]
    assert nicks == expected
    assert pres[-1].find(f"{C}show").text == "dnd"

    # Inactive again: chat states are held, a message with a body flushes them first.
    obs.send(f"<inactive xmlns='{NS}'/>")
    sync(obs)
    others[0].send(f"<presence to='{ROOM}/nick00'><show>xa</show></presence>")
    others[1].send(f"<message to='{ROOM}' type='groupchat' id='cs'>"
                   f"<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    sync(others[0])
    sync(others[1])
    obs.nothing(0.5)
    others[2].send(f"<message to='{ROOM}' type='groupchat' id='b'><body>hello</body></message>")
    got = [obs.next() for _ in range(3)]
    assert [e.tag for e in got] == [f"{C}presence", f"{C}message", f"{C}message"]
    assert got[1].get("id") == "cs" and got[2].get("id") == "b"
    # Our own MUC presence (status 110) is never held.
    others[0].send(f"<presence to='{ROOM}/nick00'><show>chat</show></presence>")
    sync(others[0])
    obs.nothing(0.3)
    obs.send(f"<presence to='{ROOM}/observer'><show>away</show></presence>")
    el = obs.next()
    assert el.tag == f"{C}presence"
    codes = [s.get("code") for s in el.iter(f"{{{MUC_USER}}}status")]
    # the held update from nick00 was flushed right before our self-presence
    if el.get("from").endswith("/nick00"):
        el = obs.next()
        codes = [s.get("code") for s in el.iter(f"{{{MUC_USER}}}status")]
    assert "110" in codes
    for c in others:
        c.close()
    obs.close()


def test_csi_with_stream_management_counts_what_was_really_sent(xmppd_server):
    c = SMClient(xmppd_server.port)
    c.login("counted", "pw")
    c.enable(resume=False)
    c.send(f"<inactive xmlns='{NS}'/>")
    peers = []
    for i in range(5):
        p = Raw(xmppd_server.port)
        p.login(f"peer{i}", "pw")
        p.send("<presence to='counted@localhost/raw'/>")
        p.send("<presence to='counted@localhost/raw'><show>away</show></presence>")
        sync(p)
        peers.append(p)
    c.send(f"<r xmlns='{NS_SM}'/>")
    a = c.next()
    assert a.tag == f"{{{NS_SM}}}a"          # nonzas are never held
    c.nothing(0.3)
    c.send(f"<active xmlns='{NS}'/>")
    time.sleep(0.3)
    got = messages(c, 0.3)                   # presences are skipped by messages()
    assert got == []
    assert c.handled == 5                    # one (the newest) per peer
    c.send(f"<a xmlns='{NS_SM}' h='{c.handled}'/>")
    c.send("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert c.next().get("id") == "x"         # an ack of exactly what arrived is accepted
    for p in peers:
        p.close()
