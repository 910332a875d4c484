"""Two processes, one database: an xmppd c2s node and an xmppd-muc node on one PostgreSQL.

Users with password accounts (stored in PostgreSQL) log in at the c2s node and
use rooms served by the MUC node, attached over XEP-0114. The MUC node is killed
(SIGKILL) mid-traffic (a pipelined burst of affiliation changes) and restarted on the same
database: every acknowledged change, persistent rooms, their configuration,
affiliations (with reasons) and nick registrations are all still there, and the
c2s node kept serving its clients meanwhile.
"""
import signal

from pgserver import Backend, pg_cluster, pg_dsn  # noqa: F401 (fixtures)
from test_c2s_raw import C, stanza_error
from test_ctl import ctl
from test_durability import (DISCO_INFO, MUC, MUC_ADMIN, MUC_OWNER, REGISTER, affiliation_list,
                             form, iq, join, login, ok, set_affiliation, wait_for)
from test_muc_component import MUC_DOMAIN, SECRET, start_muc
from conftest import XmppdServer
from xmppd.config import Config
from xmppd.storage.accounts import AccountStore
from xmppd.storage.rooms import RoomStore

ROOM = f"hall@{MUC_DOMAIN}"
PASSWORD = "correct horse"


def test_c2s_node_and_muc_node_share_postgresql_and_survive_a_muc_kill(tmp_path, pg_dsn):
    be = Backend("postgresql", pg_dsn)
    db = be.open(tmp_path)
    accounts = AccountStore(db, Config())
    for user in ("owner", "alice", "bob", "mallory"):
        accounts.create(user, PASSWORD)

    c2s_dir = tmp_path / "c2s"
    c2s_dir.mkdir()
    (c2s_dir / "xmppd.toml").write_text(be.config + f"""
component_port = 0
[[components]]
domain = "{MUC_DOMAIN}"
secret = "{SECRET}"
""")
    c2s = XmppdServer(["--c2s-port", "0", "--data-dir", str(c2s_dir),
                       "--config", str(c2s_dir / "xmppd.toml")], c2s_dir).wait_listening()
    clients = []
    muc = None
    try:
        be.check_used(c2s)
        cport = int(c2s.wait_for_log(r"component listening on \S+:(\d+)")[1])
        muc_dir = tmp_path / "muc"
        muc_dir.mkdir()
        (muc_dir / "muc.toml").write_text(be.config)
        muc = start_muc(cport, muc_dir, "--config", str(muc_dir / "muc.toml"))
        be.check_used(muc)

        owner = login(c2s, "owner")
        clients.append(owner)
        assert join(owner, "Boss", room=ROOM)[0] == "ok"
        ok(iq(owner, f"<query xmlns='{MUC_OWNER}'>" + form({
            "muc#roomconfig_persistentroom": "1",
            "muc#roomconfig_membersonly": "1",
            "muc#roomconfig_roomname": "The Hall",
        }, MUC + "#roomconfig") + "</query>", to=ROOM))
        ok(iq(owner, f"<query xmlns='{MUC_ADMIN}'><item jid='alice@localhost' affiliation='member'/>"
                     "</query>", to=ROOM))
        ok(iq(owner, f"<query xmlns='{MUC_ADMIN}'><item jid='mallory@localhost' "
                     "affiliation='outcast'><reason>spam</reason></item></query>", to=ROOM))
        alice = login(c2s, "alice")
        clients.append(alice)
        ok(iq(alice, f"<query xmlns='{REGISTER}'>" +
              form({"muc#register_roomnick": "Ally"}, MUC + "#register") + "</query>", to=ROOM))
        assert join(alice, "Ally", room=ROOM)[0] == "ok"

        # the room is in the shared database, written by the MUC node
        (rec,) = [r for r in RoomStore(db, Config()).load_all() if r["jid"] == ROOM]
        assert rec["affiliations"]["alice@localhost"] == ("member", {"nick": "Ally"})

        # kill the MUC node mid-traffic: a pipelined burst of member grants, SIGKILL while
        # answers are still coming; every grant acknowledged must be there after the restart
        acked = set()

        def collect(el):
            if el.tag == f"{C}iq" and (el.get("id") or "").startswith("burst"):
                assert el.get("type") == "result", el
                acked.add(int(el.get("id")[5:]))

        owner.send("".join(f"<iq type='set' to='{ROOM}' id='burst{i}'><query xmlns='{MUC_ADMIN}'>"
                           f"<item jid='u{i}@localhost' affiliation='member'/></query></iq>"
                           for i in range(300)))
        while len(acked) < 20:
            collect(owner.next())
        muc.proc.send_signal(signal.SIGKILL)
        muc.proc.wait(10)
        try:
            while True:
                collect(owner.next(0.5))
        except AssertionError:
            pass
        assert 20 <= len(acked) < 300, len(acked)
        c2s.wait_for_log(r"component conference\.localhost disconnected")
        alice.send(f"<message to='{ROOM}' type='groupchat' id='down'><body>anyone?</body></message>")
        err = wait_for(alice, lambda el: el.get("id") == "down")
        assert stanza_error(err)[1] == "service-unavailable"
        alice.send("<iq type='get' to='localhost' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert wait_for(alice, lambda el: el.get("id") == "alive").get("type") == "result"

        muc.stop()
        muc = start_muc(cport, muc_dir, "--config", str(muc_dir / "muc.toml"))
        members = affiliation_list(owner, "member", room=ROOM)
        lost = sorted(i for i in acked if f"u{i}@localhost" not in members)
        assert not lost, f"acknowledged grants lost: {lost}"
        assert members["alice@localhost"] is None
        assert affiliation_list(owner, "outcast", room=ROOM) == {"mallory@localhost": "spam"}
        assert "owner@localhost" in affiliation_list(owner, "owner", room=ROOM)
        info = ok(iq(owner, f"<query xmlns='{DISCO_INFO}'/>", to=ROOM, itype="get"))
        features = {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
        assert {"muc_persistent", "muc_membersonly"} <= features
        assert next(info.iter(f"{{{DISCO_INFO}}}identity")).get("name") == "The Hall"
        # the registration holds: bob may not take Ally's nick, alice gets it back
        bob = login(c2s, "bob")
        clients.append(bob)
        assert join(bob, "Bob", room=ROOM) == ("error", "registration-required")   # members-only
        ok(iq(owner, f"<query xmlns='{MUC_ADMIN}'><item jid='bob@localhost' affiliation='member'/>"
                     "</query>", to=ROOM))
        assert join(bob, "Ally", room=ROOM) == ("error", "conflict")
        assert join(alice, "Ally", room=ROOM)[0] == "ok"
        mallory = login(c2s, "mallory")
        clients.append(mallory)
        assert join(mallory, "Mal", room=ROOM)[1] in ("forbidden", "registration-required")
        # and a message makes it through the new MUC node
        bob_join = join(bob, "Bob", room=ROOM)
        assert bob_join[0] == "ok"
        alice.send(f"<message to='{ROOM}' type='groupchat' id='back'><body>back!</body></message>")
        got = wait_for(bob, lambda el: el.tag == f"{C}message" and el.findtext(f"{C}body") == "back!")
        assert got.get("from") == f"{ROOM}/Ally"

        # xmppdctl on the shared database: the MUC node (not the c2s node) destroys the live room
        r = ctl(muc_dir, "--config", str(muc_dir / "muc.toml"), "room-destroy", ROOM)
        assert r.returncode == 0, r.stderr
        gone = wait_for(alice, lambda el: el.tag == f"{C}presence" and el.get("type") == "unavailable"
                        and el.find(f"{{{MUC}#user}}x/{{{MUC}#user}}destroy") is not None, timeout=10)
        assert gone.get("from") == f"{ROOM}/Ally"
        assert not [r for r in RoomStore(db, Config()).load_all() if r["jid"] == ROOM]
    finally:
        for c in clients:
            c.close()
        if muc is not None:
            muc.stop()
        c2s.stop()
        db.close()
