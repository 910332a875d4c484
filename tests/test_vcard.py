"""vCards (XEP-0054), avatar hashes in presence (XEP-0153), vCard <-> PEP avatar conversion
(XEP-0398/0084), private XML storage (XEP-0049), restart survival and account deletion,
over raw sockets against a real server."""
import base64
import hashlib
import signal
import subprocess
import sys

from conftest import REPO_ROOT, server_env
from personal_helpers import EV, PS, error_of, events, iq, items, login, ok, publish, sync
from test_c2s_raw import C

V = "{vcard-temp}"
UPD = "{vcard-temp:x:update}"
IMAGE = bytes(range(256)) * 4
IMAGE_B64 = base64.b64encode(IMAGE).decode()
IMAGE_SHA1 = hashlib.sha1(IMAGE).hexdigest()
NS_PRIVATE = "jabber:iq:private"


def vcard_set(c, body):
    return iq(c, f"<vCard xmlns='vcard-temp'>{body}</vCard>")


def vcard_get(c, to=None):
    return iq(c, "<vCard xmlns='vcard-temp'/>", type="get", to=to)


def photo_of(presence):
    x = presence.find(f"{UPD}x")
    assert x is not None, presence
    p = x.find(f"{UPD}photo")
    assert p is not None
    return p.text or ""


def next_presence(c):
    while True:
        el = c.next()
        if el.tag == f"{C}presence":
            return el


def test_vcard_set_get_and_errors(xmppd_server):
    alice = login(xmppd_server, "alice")
    bob = login(xmppd_server, "bob")
    # own empty vCard: an empty <vCard/>; another account's: service-unavailable (XEP-0054 §3.3)
    got = ok(vcard_get(alice))
    assert got.find(f"{V}vCard") is not None and len(list(got.find(f"{V}vCard"))) == 0
    assert error_of(vcard_get(bob, "alice@localhost"))[:2] == ("cancel", "service-unavailable")
    assert error_of(vcard_get(bob, "nobody@localhost"))[:2] == ("cancel", "service-unavailable")
    ok(vcard_set(alice, "<FN>Alice Liddell</FN><NICKNAME>al</NICKNAME>"))
    for c, to in ((alice, None), (alice, "alice@localhost"), (bob, "alice@localhost")):
        v = ok(vcard_get(c, to)).find(f"{V}vCard")
        assert v.find(f"{V}FN").text == "Alice Liddell" and v.find(f"{V}NICKNAME").text == "al"
    # only the owner sets (XEP-0054 §3.2)
    assert error_of(iq(bob, "<vCard xmlns='vcard-temp'><FN>x</FN></vCard>", to="alice@localhost"))[1] == "forbidden"
    assert ok(vcard_get(bob, "alice@localhost")).find(f"{V}vCard/{V}FN").text == "Alice Liddell"
    # size limit and bad base64
    big = "<DESC>" + "d" * (130 * 1024) + "</DESC>"
    assert error_of(vcard_set(alice, big))[1] == "not-acceptable"
    assert error_of(vcard_set(alice, "<PHOTO><TYPE>image/png</TYPE><BINVAL>!!notbase64!!</BINVAL></PHOTO>"))[1] == "bad-request"
    assert ok(vcard_get(alice)).find(f"{V}vCard/{V}FN").text == "Alice Liddell"   # unchanged


def test_vcard_photo_becomes_pep_avatar_and_presence_hash(xmppd_server):
    alice = login(xmppd_server, "alice")
    alice.send("<presence/>")
    assert photo_of(next_presence(alice)) == ""            # no avatar: empty <photo/>
    ok(vcard_set(alice, f"<FN>A</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{IMAGE_B64[:60]}\n"
                        f"{IMAGE_B64[60:]}</BINVAL></PHOTO>"))
    alice.send("<presence><show>away</show></presence>")
    assert photo_of(next_presence(alice)) == IMAGE_SHA1
    # XEP-0084 nodes hold it, open to everyone
    bob = login(xmppd_server, "bob")
    meta = ok(items(bob, "alice@localhost", "urn:xmpp:avatar:metadata"))
    info = meta.find(f"{PS}pubsub/{PS}items/{PS}item/{{urn:xmpp:avatar:metadata}}metadata/{{urn:xmpp:avatar:metadata}}info")
    assert info.get("id") == IMAGE_SHA1 and info.get("bytes") == str(len(IMAGE)) and info.get("type") == "image/png"
    data = ok(items(bob, "alice@localhost", "urn:xmpp:avatar:data"))
    assert data.find(f"{PS}pubsub/{PS}items/{PS}item/{{urn:xmpp:avatar:data}}data").text == IMAGE_B64
    v = ok(vcard_get(bob, "alice@localhost")).find(f"{V}vCard")
    assert v.find(f"{V}PHOTO/{V}BINVAL").text == IMAGE_B64 and v.find(f"{V}PHOTO/{V}TYPE").text == "image/png"
    # a client-provided <photo/> is left alone (XEP-0153 §4.3)
    alice.send("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
    assert photo_of(next_presence(alice)) == ""
    # directed presence carries it too
    bob.send("<presence/>")
    alice.send("<presence to='bob@localhost/r'/>")
    p = next_presence(bob)
    while p.get("from") != "alice@localhost/r":      # bob's own presence may come first
        p = next_presence(bob)
    assert photo_of(p) == IMAGE_SHA1
    # a vCard without PHOTO disables the avatar (empty metadata)
    ok(vcard_set(alice, "<FN>A</FN>"))
    alice.send("<presence/>")
    assert photo_of(next_presence(alice)) == ""
    assert ok(vcard_get(alice)).find(f"{V}vCard/{V}PHOTO") is None


def test_pep_avatar_publish_updates_vcard_and_hash(xmppd_server):
    """XEP-0398: a client publishing XEP-0084 avatar data+metadata changes the vCard PHOTO and hash."""
    alice = login(xmppd_server, "alice")
    ok(vcard_set(alice, "<FN>Alice</FN>"))
    ok(publish(alice, "urn:xmpp:avatar:data", IMAGE_SHA1, f"<data xmlns='urn:xmpp:avatar:data'>{IMAGE_B64}</data>",
               {"access_model": "open"}))
    ok(publish(alice, "urn:xmpp:avatar:metadata", IMAGE_SHA1,
               f"<metadata xmlns='urn:xmpp:avatar:metadata'><info id='{IMAGE_SHA1}' bytes='{len(IMAGE)}' "
               f"type='image/jpeg'/></metadata>", {"access_model": "open"}))
    alice.send("<presence/>")
    assert photo_of(next_presence(alice)) == IMAGE_SHA1
    bob = login(xmppd_server, "bob")
    v = ok(vcard_get(bob, "alice@localhost")).find(f"{V}vCard")
    assert v.find(f"{V}FN").text == "Alice"
    assert v.find(f"{V}PHOTO/{V}BINVAL").text == IMAGE_B64 and v.find(f"{V}PHOTO/{V}TYPE").text == "image/jpeg"
    # disabling over PEP
    ok(publish(alice, "urn:xmpp:avatar:metadata", "off", "<metadata xmlns='urn:xmpp:avatar:metadata'/>"))
    alice.send("<presence/>")
    assert photo_of(next_presence(alice)) == ""
    assert ok(vcard_get(bob, "alice@localhost")).find(f"{V}vCard/{V}PHOTO") is None


def test_muc_occupants_see_the_avatar_hash(xmppd_server):
    alice = login(xmppd_server, "alice")
    bob = login(xmppd_server, "bob")
    ok(vcard_set(alice, f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{IMAGE_B64}</BINVAL></PHOTO>"))
    room = "tea@conference.localhost"
    alice.send(f"<presence to='{room}/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    while True:                      # alice's own presence back from the room (status 110)
        p = next_presence(alice)
        if p.get("from") == f"{room}/Alice":
            assert photo_of(p) == IMAGE_SHA1
            break
    ok(iq(alice, "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
                 "type='submit'/></query>", to=room))          # instant room: unlocked
    bob.send(f"<presence to='{room}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    seen = {}
    while len(seen) < 2:
        p = next_presence(bob)
        seen[p.get("from")] = p
    assert photo_of(seen[f"{room}/Alice"]) == IMAGE_SHA1
    assert photo_of(seen[f"{room}/Bob"]) == ""


def test_private_storage(xmppd_server):
    alice = login(xmppd_server, "alice")
    bob = login(xmppd_server, "bob")
    got = ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>", type="get"))
    el = got.find(f"{{{NS_PRIVATE}}}query/{{urn:example:prefs}}prefs")
    assert el is not None and len(list(el)) == 0                 # nothing stored yet: the empty element
    ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'><a>1</a></prefs>"
                 f"<other xmlns='urn:example:other'>x</other></query>"))
    got = ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>", type="get"))
    assert got.find(f"{{{NS_PRIVATE}}}query/{{urn:example:prefs}}prefs/{{urn:example:prefs}}a").text == "1"
    got = ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'><other xmlns='urn:example:other'/></query>", type="get"))
    assert got.find(f"{{{NS_PRIVATE}}}query/{{urn:example:other}}other").text == "x"
    # other accounts: forbidden (XEP-0049 §3), for get and set
    assert error_of(iq(bob, f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>",
                       type="get", to="alice@localhost"))[1] == "forbidden"
    assert error_of(iq(bob, f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>",
                       to="alice@localhost"))[1] == "forbidden"
    # bad queries: no child, jabber: namespaces, two namespaces in a get
    assert error_of(iq(alice, f"<query xmlns='{NS_PRIVATE}'/>", type="get"))[1] == "not-acceptable"
    assert error_of(iq(alice, f"<query xmlns='{NS_PRIVATE}'><q xmlns='jabber:iq:roster'/></query>"))[1] == "not-acceptable"
    assert error_of(iq(alice, f"<query xmlns='{NS_PRIVATE}'><a xmlns='urn:a'/><b xmlns='urn:b'/></query>",
                       type="get"))[1] == "not-acceptable"
    # the per-account bound: a set past it changes nothing
    big = "<blob xmlns='urn:example:blob'>" + "b" * (200 * 1024) + "</blob>"
    ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'>{big}</query>"))
    big2 = "<blob2 xmlns='urn:example:blob2'>" + "c" * (100 * 1024) + "</blob2>"
    assert error_of(iq(alice, f"<query xmlns='{NS_PRIVATE}'>{big2}</query>"))[1] == "not-acceptable"
    got = ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'><blob2 xmlns='urn:example:blob2'/></query>", type="get"))
    assert not (got.find(f"{{{NS_PRIVATE}}}query/{{urn:example:blob2}}blob2").text or "")


def test_personal_data_survives_sigkill_and_goes_with_the_account(xmppd_server_factory, tmp_path):
    data = tmp_path / "keep"
    server = xmppd_server_factory(data_dir=data)
    alice = login(server, "alice")
    ok(vcard_set(alice, f"<FN>Kept</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{IMAGE_B64}</BINVAL></PHOTO>"))
    ok(publish(alice, "urn:example:kept", "k1", "<k xmlns='urn:example:k'>v</k>", {"access_model": "open"}))
    ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'>p</prefs></query>"))
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    server = xmppd_server_factory(data_dir=data)
    alice = login(server, "alice")
    assert ok(vcard_get(alice)).find(f"{V}vCard/{V}FN").text == "Kept"
    assert ok(items(alice, None, "urn:example:kept")).find(f"{PS}pubsub/{PS}items/{PS}item").get("id") == "k1"
    got = ok(iq(alice, f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>", type="get"))
    assert got.find(f"{{{NS_PRIVATE}}}query/{{urn:example:prefs}}prefs").text == "p"
    alice.send("<presence/>")
    assert photo_of(next_presence(alice)) == IMAGE_SHA1
    alice.close()
    server.stop()
    r = subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data), "deluser", "alice"],
                       capture_output=True, text=True, cwd=REPO_ROOT, env=server_env())
    assert r.returncode == 0, r.stderr
    import sqlite3
    db = sqlite3.connect(str(data / "xmppd.sqlite3"))
    for table in ("pep_nodes", "pep_items", "pep_subscriptions", "vcards", "private_xml"):
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
