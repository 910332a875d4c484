"""XEP-0133 service administration driven by slixmpp's XEP-0050 client, against real accounts.

Every command is run the way Gajim's "Execute command" runs it: list the
commands (disco#items on the commands node), execute (get the form), then
complete with the filled-in form. A non-admin sees no commands and gets
forbidden. Hostile inputs get a note or a stanza error, never a crash.
"""
import asyncio
import subprocess
import sys

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from conftest import REPO_ROOT, server_env
from test_slixmpp_core import make_client

ADMIN = "http://jabber.org/protocol/admin"
COMMANDS = "http://jabber.org/protocol/commands"


def adduser(data, name, password):
    subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data), "adduser", name],
                   input=password + "\n", text=True, check=True, cwd=REPO_ROOT,
                   env=server_env(), capture_output=True)


def client(jid, password):
    c = make_client(jid, password)
    for p in ("xep_0004", "xep_0050", "xep_0133"):
        c.register_plugin(p)
    return c


async def login(server, jid, password):
    c = client(jid, password)
    c.connect("127.0.0.1", server.port)
    await c.wait_until("session_start", timeout=10)
    c.send_presence()
    return c


async def login_fails(server, jid, password):
    c = client(jid, password)
    failed = asyncio.get_running_loop().create_future()
    c.add_event_handler("failed_auth", lambda *_: failed.done() or failed.set_result(True))
    c.add_event_handler("session_start", lambda *_: failed.done() or failed.set_result(False))
    c.connect("127.0.0.1", server.port)
    result = await asyncio.wait_for(failed, 10)
    c.disconnect()
    return result


async def run_command(c, name, **fields):
    """Execute a command, fill its form with ``fields`` (if it has one), complete it."""
    adhoc = c.plugin["xep_0050"]
    iq = await adhoc.send_command("localhost", f"{ADMIN}#{name}", timeout=10)
    cmd = iq["command"]
    if cmd["status"] != "executing":
        return cmd
    form = cmd["form"]
    assert form["type"] == "form"
    submit = c.plugin["xep_0004"].make_form(ftype="submit")
    submit.add_field(var="FORM_TYPE", ftype="hidden", value=ADMIN)
    for var, value in fields.items():
        var = var.replace("_", "-") if var.startswith("password") else var
        shown = form.get_fields()
        assert var in shown, (var, list(shown))
        ftype = shown[var]["type"]
        submit.add_field(var=var, ftype=ftype, value=value)
    iq = await adhoc.send_command("localhost", f"{ADMIN}#{name}", action="complete",
                                  payload=submit, sessionid=cmd["sessionid"], timeout=10)
    return iq["command"]


def values(cmd, var):
    return cmd["form"].get_values()[var]


@pytest.fixture
def real_server(xmppd_server_factory, tmp_path):
    data = tmp_path / "accounts"
    adduser(data, "boss", "boss pw")
    adduser(data, "alice", "alice pw")
    return xmppd_server_factory("--admin", "boss@localhost", insecure_auth=False, data_dir=data)


def test_every_xep0133_command_with_slixmpp(real_server):
    server = real_server

    async def scenario():
        boss = await login(server, "boss@localhost/console", "boss pw")
        alice = await login(server, "alice@localhost/phone", "alice pw")

        # the command list, as a client's "Execute command" dialog shows it
        items = await boss.plugin["xep_0050"].get_commands("localhost", timeout=10)
        nodes = {i[1] for i in items["disco_items"]["items"]}
        for name in ("add-user", "delete-user", "change-user-password", "get-online-users-list",
                     "get-online-users-num", "get-registered-users-num", "end-user-session",
                     "announce", "set-motd", "edit-motd", "delete-motd"):
            assert f"{ADMIN}#{name}" in nodes
        info = await boss.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
        assert COMMANDS in info["disco_info"]["features"]
        info = await boss.plugin["xep_0030"].get_info(jid="localhost", node=f"{ADMIN}#announce",
                                                      timeout=10)
        assert ("automation", "command-node", None, "Send Announcement to Online Users") in \
            info["disco_info"]["identities"]

        # counts and lists
        cmd = await run_command(boss, "get-registered-users-num")
        assert cmd["status"] == "completed" and values(cmd, "registeredusersnum") == "2"
        cmd = await run_command(boss, "get-online-users-num")
        assert values(cmd, "onlineusersnum") == "2"
        cmd = await run_command(boss, "get-online-users-list", max_items="all")
        assert values(cmd, "onlineuserjids") == ["alice@localhost", "boss@localhost"]

        # add a user, who can then log in; a second add is refused with a note
        cmd = await run_command(boss, "add-user", accountjid="newbie@localhost",
                                password="n1 pw", password_verify="n1 pw")
        assert cmd["status"] == "completed", cmd
        assert cmd["notes"] == [("info", "Account successfully created")]
        cmd = await run_command(boss, "add-user", accountjid="newbie@localhost",
                                password="x", password_verify="x")
        assert cmd["notes"][0][0] == "error"
        cmd = await run_command(boss, "get-registered-users-num")
        assert values(cmd, "registeredusersnum") == "3"
        newbie = await login(server, "newbie@localhost/laptop", "n1 pw")

        # change the password: the old one stops working, the new one works
        cmd = await run_command(boss, "change-user-password", accountjid="newbie@localhost",
                                password="n2 pw")
        assert cmd["notes"] == [("info", "Password successfully changed")]
        assert await login_fails(server, "newbie@localhost/x", "n1 pw")
        assert not await login_fails(server, "newbie@localhost/y", "n2 pw")

        # an announcement reaches every available session as a headline
        got = asyncio.get_running_loop().create_future()
        alice.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        cmd = await run_command(boss, "announce", subject="Maintenance",
                                announcement="Down at 5 pm")
        assert cmd["status"] == "completed"
        m = await asyncio.wait_for(got, 10)
        assert m["type"] == "headline" and m["body"] == "Down at 5 pm"
        assert m["subject"] == "Maintenance" and m["from"] == "localhost"

        # the message of the day: set, shown on the next login, edited, deleted
        cmd = await run_command(boss, "set-motd", motd="Welcome to xmppd")
        assert cmd["notes"] == [("info", "Message of the day set")]
        motd = client("alice@localhost/tablet", "alice pw")
        got = asyncio.get_running_loop().create_future()
        motd.add_event_handler("message", lambda m: got.done() or got.set_result(m))
        motd.connect("127.0.0.1", server.port)
        await motd.wait_until("session_start", timeout=10)
        motd.send_presence()
        m = await asyncio.wait_for(got, 10)
        assert m["body"] == "Welcome to xmppd" and m["type"] == "headline"
        iq = await boss.plugin["xep_0050"].send_command("localhost", f"{ADMIN}#edit-motd",
                                                        timeout=10)
        assert iq["command"]["form"].get_values()["motd"] == ["Welcome to xmppd"]
        cmd = await run_command(boss, "delete-motd")
        assert cmd["notes"] == [("info", "Message of the day deleted")]
        motd.disconnect()
        await motd.wait_until("disconnected", timeout=10)

        # end a user's sessions
        ended = asyncio.get_running_loop().create_future()
        alice.add_event_handler("disconnected", lambda *_: ended.done() or ended.set_result(1))
        cmd = await run_command(boss, "end-user-session", accountjids=["alice@localhost"])
        assert cmd["notes"] == [("info", "1 session(s) ended")], cmd["notes"]
        await asyncio.wait_for(ended, 10)

        # delete a user: the session ends and the account can no longer log in
        gone = asyncio.get_running_loop().create_future()
        newbie.add_event_handler("disconnected", lambda *_: gone.done() or gone.set_result(1))
        cmd = await run_command(boss, "delete-user", accountjids=["newbie@localhost"])
        assert cmd["status"] == "completed" and cmd["notes"][0][0] == "info", cmd["notes"]
        await asyncio.wait_for(gone, 10)
        assert await login_fails(server, "newbie@localhost/z", "n2 pw")
        cmd = await run_command(boss, "delete-user", accountjids=["newbie@localhost"])
        assert cmd["notes"][0][0] == "error"
        boss.disconnect()

    asyncio.run(scenario())
    log = server.log()
    for secret in ("n1 pw", "n2 pw"):
        assert secret not in log


def test_non_admins_see_no_commands_and_are_forbidden(real_server):
    server = real_server

    async def scenario():
        alice = await login(server, "alice@localhost/phone", "alice pw")
        items = await alice.plugin["xep_0050"].get_commands("localhost", timeout=10)
        assert not items["disco_items"]["items"]
        with pytest.raises(IqError) as e:
            await alice.plugin["xep_0030"].get_info(jid="localhost", node=f"{ADMIN}#add-user",
                                                    timeout=10)
        assert e.value.condition == "item-not-found"
        for name in ("add-user", "get-online-users-num", "announce", "delete-user"):
            with pytest.raises(IqError) as e:
                await alice.plugin["xep_0050"].send_command("localhost", f"{ADMIN}#{name}",
                                                            timeout=10)
            assert e.value.condition == "forbidden"
        alice.disconnect()

    asyncio.run(scenario())


def test_hostile_command_inputs(real_server):
    """Wrong domains, bad JIDs, mismatched passwords, huge texts, unknown nodes and actions."""
    server = real_server

    async def scenario():
        boss = await login(server, "boss@localhost/console", "boss pw")
        cases = [
            ("add-user", dict(accountjid="x@example.org", password="a", password_verify="a")),
            ("add-user", dict(accountjid="bad user@localhost", password="a", password_verify="a")),
            ("add-user", dict(accountjid="y@localhost", password="a", password_verify="b")),
            ("add-user", dict(accountjid="y@localhost", password="", password_verify="")),
            ("add-user", dict(accountjid="", password="a", password_verify="a")),
            ("change-user-password", dict(accountjid="nobody@localhost", password="a")),
            ("delete-user", dict(accountjids=["nobody@localhost"])),
            ("delete-user", dict(accountjids=["localhost"])),
            ("end-user-session", dict(accountjids=["@@@"])),
            ("announce", dict(announcement="x" * 5000)),
            ("set-motd", dict(motd="")),
            ("get-online-users-list", dict(max_items="1000000")),
        ]
        for name, fields in cases:
            cmd = await run_command(boss, name, **fields)
            assert cmd["status"] == "completed" and cmd["notes"][0][0] == "error", (name, fields)
        adhoc = boss.plugin["xep_0050"]
        with pytest.raises(IqError) as e:
            await adhoc.send_command("localhost", f"{ADMIN}#no-such-command", timeout=10)
        assert e.value.condition == "item-not-found"
        with pytest.raises(IqError) as e:
            await adhoc.send_command("localhost", f"{ADMIN}#announce", action="explode",
                                     timeout=10)
        assert e.value.condition == "bad-request"
        with pytest.raises(IqError) as e:
            await adhoc.send_command("boss@localhost", f"{ADMIN}#announce", timeout=10)
        assert e.value.condition == "service-unavailable"
        # the server still works, and nothing was created
        cmd = await run_command(boss, "get-registered-users-num")
        assert values(cmd, "registeredusersnum") == "2"
        boss.disconnect()

    asyncio.run(scenario())
    assert "Traceback" not in server.log()
