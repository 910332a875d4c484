"""RFC 6120 stream details and the developer trace, over real sockets (issue 14).

- §4.7.5: a header with a higher version than ours (``version='2.0'``) is
  answered with ``version='1.0'`` and the normal features; refusing is the
  initiator's call, not ours.
- ``--trace``: the client's own stream header is logged; every stanza is
  one log line (newlines escaped, so ``grep`` finds whole stanzas); only
  secrets are redacted (the boolean ``muc#roomconfig_passwordprotectedroom``
  is not a password, the room secret is).
"""
import re

from test_c2s_raw import HEADER, NS_BIND, NS_SASL, Raw, start_server
from test_hardening import NS_MUC_OWNER, create_instant_room, expect, iq


def test_higher_stream_version_is_answered_with_ours(tmp_path_factory):
    server = start_server(tmp_path_factory, "--insecure-auth")
    c = Raw(server.port)
    try:
        c.send(HEADER.format(to="localhost", extra="").replace("version='1.0'", "version='2.0'"))
        feats = c.next()
        assert c.header is not None and c.header.get("version") == "1.0"
        assert feats.tag == "{http://etherx.jabber.org/streams}features"
        # and the stream goes on normally (TLS, SASL, bind)
        c.starttls()
        assert c.auth("v2user", "pw").tag == f"{{{NS_SASL}}}success"
        assert c.open().find(f"{{{NS_BIND}}}bind") is not None
    finally:
        c.close()
        server.stop()


def test_trace_logs_client_header_one_line_per_stanza_and_only_secrets(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth", "--trace")
    try:
        c = Raw(srv.port)
        c.login("tracer", resource="t")
        c.send("<message to='tracer@localhost/t' id='multi' type='chat'>"
               "<body>first line\nsecond line\nthird</body></message>")
        expect(c, lambda e: e.get("id") == "multi")
        room = "traced@conference.localhost"
        create_instant_room(c, room, "O")
        r = iq(c, f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
                  "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                  "<field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>"
                  "<field var='muc#roomconfig_roomsecret'><value>TraceSecret9</value></field>"
                  "</x></query>", room, "set")
        assert r.get("type") == "result"
        c.close()
        srv.wait_for_log(r"connection closed \(tracer@localhost/t\)")
        log = srv.log()
        # the client's own stream header, as sent (to, version)
        header = [ln for ln in log.splitlines() if " IN <stream:stream" in ln]
        assert header, log[-3000:]
        assert "to='localhost'" in header[0] and "version='1.0'" in header[0], header[0]
        # the multi-line body is one line in each direction, newlines escaped
        lines = [ln for ln in log.splitlines() if "id='multi'" in ln]
        assert len(lines) == 2, lines                      # IN and OUT
        for ln in lines:
            assert "first line\\nsecond line\\nthird" in ln, ln
        assert not any(ln.startswith("second line") for ln in log.splitlines())
        # a flag about passwords is shown, the password itself is not
        assert re.search(r"muc#roomconfig_passwordprotectedroom'><value>1</value>", log), log[-3000:]
        assert "TraceSecret9" not in log
        assert "[redacted]" in log
    finally:
        srv.stop()
