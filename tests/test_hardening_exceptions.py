"""A handler that raises answers internal-server-error, is logged with
context, and affects nothing else.

No well-formed input makes the shipped handlers raise (tests/test_fuzz.py
looks for that), so the server here is the real one built by
``xmppd.server.build`` plus three faulty extensions plugged in through its
public extension points: a server IQ handler (``router.iq_handlers``), a
route whose delivery raises (``router.routes``), a MUC hook, and a route
that answers late (after the client's stream has ended). It runs in
a subprocess, like every other server in the tests, and is driven over
real sockets.
"""
import sys

import pytest

from conftest import XmppdServer
from test_c2s_raw import C
from test_hardening import alive, by_id, error_condition, expect, iq, join, login, ping

FAULTY_SERVER = r'''
import sys
import xmppd  # compat shim first
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from xmppd import config
from xmppd.server import build

def boom(iq, child, target):
    raise ZeroDivisionError("handler exploded")

class Exploding:
    def send(self, element):
        raise RuntimeError("component exploded")

def hook(event):
    raise KeyError("hook exploded")

class Late:
    """Answers IQs a moment later, as a route that waits for storage would."""
    def send(self, el):
        from xmppd.router import result_reply
        reply = result_reply(el)
        reactor.callLater(0, root.router.route, reply)   # next reactor turn

globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
cfg = config.load(None, {"data_dir": sys.argv[1], "c2s_port": 0, "http_port": 0, "insecure_auth": True})
root = build(cfg)
root.router.iq_handlers["urn:xmppd:test:boom"] = boom
root.router.routes["boom.localhost"] = Exploding()
root.router.muc.hooks.add("muc-room-iq/urn:xmppd:test:boom", hook)
root.router.routes["late.localhost"] = Late()
root.startService()
reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
reactor.run()
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("faulty")
    script = d / "faulty_server.py"
    script.write_text(FAULTY_SERVER)
    srv = XmppdServer([d / "data"], d / "data", command=[sys.executable, script]).wait_listening()
    yield srv
    srv.stop()


def _plain_login(port, user):
    """Log in without STARTTLS (allowed on loopback in dev mode)."""
    import base64
    from test_c2s_raw import Raw
    c = Raw(port)
    c.open()
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
           + base64.b64encode(f"\0{user}\0pw".encode()).decode() + "</auth>")
    c.next()
    c.open()
    c.bind("r")
    return c


def _still_serving(server, c):
    assert ping(c).get("type") == "result"          # the same session goes on
    alive(server)                                    # and everybody else is served


def test_server_iq_handler_exception(server):
    c = login(server.port, "victim", "r")
    try:
        r = iq(c, "<boom xmlns='urn:xmppd:test:boom'/>", "localhost")
        assert error_condition(r) == ("cancel", "internal-server-error")
        m = server.wait_for_log(r"IQ handler \S*boom failed on an IQ from victim@localhost/r "
                                r"\(urn:xmppd:test:boom\)")
        assert "ZeroDivisionError: handler exploded" in server.log()[m.start():]
        _still_serving(server, c)
    finally:
        c.close()


def test_exception_while_routing_from_a_client(server):
    c = login(server.port, "router-victim", "r")
    try:
        r = iq(c, "<query xmlns='urn:x'/>", "boom.localhost", "set")
        assert error_condition(r) == ("cancel", "internal-server-error")
        c.send("<message to='boom.localhost' id='m1'><body>x</body></message>")
        server.wait_for_log(r"router-victim@localhost/r: error handling <message[^\n]*boom\.localhost")
        m = server.wait_for_log(r"router-victim@localhost/r: error handling <iq[^\n]*boom\.localhost")
        assert "RuntimeError: component exploded" in server.log()[m.start():]
        _still_serving(server, c)
    finally:
        c.close()


def test_muc_hook_exception(server):
    room = "boomroom@conference.localhost"
    c = login(server.port, "muc-victim", "r")
    try:
        join(c, room, "v")
        r = iq(c, "<boom xmlns='urn:xmppd:test:boom'/>", room)
        assert error_condition(r) == ("cancel", "internal-server-error")
        m = server.wait_for_log(r"MUC dispatch failed for iq from muc-victim@localhost/r "
                                r"to boomroom@conference\.localhost")
        assert "KeyError: 'hook exploded'" in server.log()[m.start():]
        # the room still works for its occupant
        c.send(f"<message to='{room}' type='groupchat' id='g1'><body>ok</body></message>")
        assert expect(c, by_id("g1")).tag == f"{C}message"
        _still_serving(server, c)
    finally:
        c.close()


def test_nothing_is_written_after_the_stream_is_closed(server):
    """A reply that arrives after our </stream:stream> is dropped, not written after it."""
    c = _plain_login(server.port, "late-victim")    # no TLS: its close would hide the bytes
    try:
        # one read: the reply is due on the next reactor turn, the stream ends in this one
        c.send("<iq type='get' id='late1' to='late.localhost'><query xmlns='urn:x'/></iq>"
               "<iq type='bogus' id='bad'/>")            # bad-format: the stream ends now
        c.wait_closed()
        assert c.raw.endswith(b"</stream:stream>"), c.raw[-300:]
        assert b"late1" not in c.raw
    finally:
        c.close()
    alive(server)
