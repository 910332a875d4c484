"""Tests of the scansion runner itself: parser, matcher, wire format, and end to end against
Prosody 0.12.3 (the reference implementation the scansion scripts were written for).

The matcher tests come in pairs: a stanza that must match and a close variant that must not, so
a matcher that accepts everything (or nothing) fails here.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from xmppd.testing import matcher, script
from xmppd.testing.cli import main as cli_main
from xmppd.testing.client import StreamParser, split_jid, to_wire
from xmppd.testing.runner import run_file

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "scansion"
RUN_PROSODY = REPO_ROOT / "scripts" / "run-prosody"


def stanza(xml):
    """One element as a script would write it (default namespace jabber:client)."""
    [el] = script.parse_fragment(textwrap.dedent(xml))
    return el


def received(xml):
    """One element as the client would receive it inside a jabber:client stream."""
    wrapped = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
               + textwrap.dedent(xml) + "</stream:stream>")
    return list(ET.fromstring(wrapped))[0]


def matches(expected, got, captures=None):
    return matcher.match(stanza(expected), received(got), captures) is not None


# -- parser ------------------------------------------------------------------------------------

EXAMPLE = """\
# Example: a title
// a comment
[Client] Romeo
	jid: user@localhost/balcony
	password: secret

[Client] Juliet
	jid: user2@localhost
	password: password

-----
-- another comment style
Romeo connects

Romeo sends:
	<message to="${Juliet's JID}">
		<body>Hi</body>
	</message>
	<presence/>

# comment between steps
Juliet receives:
	<message from="${Romeo's full JID}" scansion:strict='true'>
		<body>Hi</body>
	</message>

Juliet receives: nothing
Romeo disconnects
"""


def test_parse_header_and_steps():
    s = script.parse(EXAMPLE, "example.scs")
    assert s.title == "Example: a title"
    assert list(s.clients) == ["Romeo", "Juliet"]
    assert s.clients["Romeo"].jid == "user@localhost/balcony"
    assert s.clients["Romeo"].password == "secret"
    assert [(st.client, st.action, st.line) for st in s.steps] == [
        ("Romeo", "connects", 13),
        ("Romeo", "sends", 15),
        ("Juliet", "receives", 22),
        ("Juliet", "receives-nothing", 27),
        ("Romeo", "disconnects", 28),
    ]
    sends = s.steps[1]
    assert [el.tag for el in sends.stanzas] == ["{jabber:client}message", "{jabber:client}presence"]
    assert sends.stanzas[0].get("to") == "${Juliet's JID}"
    recv = s.steps[2].stanzas[0]
    assert recv.get(matcher.STRICT_ATTR) == "true"
    assert recv.find("{jabber:client}body").text == "Hi"


@pytest.mark.parametrize("text, line, fragment", [
    ("[Client] A\n\tjid: a@localhost\nA connects\n", 3, "header"),
    ("[Client] A\n\tjid: a@localhost\n-----\nB connects\n", 4, "unknown client 'B'"),
    ("[Client] A\n\tjid: a@localhost\n-----\nA connects now\n", 4, "unexpected text"),
    ("[Client] A\n\tjid: a@localhost\n-----\nA sends:\nA connects\n", 4, "without an indented stanza"),
    ("[Client] A\n\tjid: a@localhost\n-----\nA sends:\n\t<message>\n\t\t<body>\n\t</message>\n", 7, "invalid XML"),
    ("[Client] A\n\tjid: a@localhost\n-----\nA dances\n", 4, "cannot understand"),
    ("-----\nA connects\n", 1, "no [Client]"),
    ("[Client] A\n\tjid: a@localhost\n-----\nA receives: something\n", 4, "unexpected text"),
])
def test_parse_errors_name_the_line(text, line, fragment):
    with pytest.raises(script.ScriptError) as info:
        script.parse(text, "bad.scs")
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"bad.scs:{line}:")


def test_all_shared_scripts_parse():
    if not SHARED.is_dir():
        pytest.skip("../shared/scansion not present")
    for path in sorted(SHARED.glob("**/*.scs")):
        s = script.load(path)
        assert s.steps and s.clients, path


# -- matcher: non-strict (jabber:client) elements -----------------------------------------------

def test_extra_attributes_and_children_are_ignored_on_non_strict():
    assert matches("<message type='chat'/>",
                   "<message type='chat' id='x' from='a@b/c'><body>hi</body><thread>t</thread></message>")


def test_expected_attribute_must_be_present_and_equal():
    assert not matches("<message type='chat'/>", "<message/>")
    assert not matches("<message type='chat'/>", "<message type='groupchat'/>")


def test_children_in_any_order_on_non_strict():
    exp = "<message><subject/><body>b</body></message>"
    assert matches(exp, "<message><body>b</body><x xmlns='urn:x'/><subject/></message>")
    assert not matches(exp, "<message><body>b</body></message>")


def test_each_expected_child_needs_its_own_received_child():
    exp = "<presence><status>a</status><status/></presence>"
    assert matches(exp, "<presence><status>b</status><status>a</status></presence>")
    assert not matches(exp, "<presence><status>a</status></presence>")


def test_name_and_namespace_must_be_equal():
    assert not matches("<message/>", "<presence/>")
    # an element without xmlns in a script is jabber:client
    assert not matches("<message><body/></message>", "<message><body xmlns='urn:other'/></message>")
    assert matches("<message><x xmlns='urn:x'/></message>", "<message><x xmlns='urn:x'/></message>")
    assert not matches("<message><x xmlns='urn:x'/></message>", "<message><x xmlns='urn:y'/></message>")


def test_text_compared_trimmed_only_when_given():
    assert matches("<message><body>\n\t\tHello\n\t</body></message>", "<message><body>Hello</body></message>")
    assert not matches("<message><body>Hello</body></message>", "<message><body>Hell</body></message>")
    assert matches("<message><body/></message>", "<message><body>anything</body></message>")


# -- matcher: strict (namespaced) elements -----------------------------------------------------

MUC_USER = "http://jabber.org/protocol/muc#user"


def test_strict_children_must_be_in_the_same_order():
    exp = f"""<presence><x xmlns='{MUC_USER}'><item role='moderator'/><status code='110'/></x></presence>"""
    assert matches(exp, f"<presence><x xmlns='{MUC_USER}'><item role='moderator'/><status code='110'/></x></presence>")
    assert not matches(exp, f"<presence><x xmlns='{MUC_USER}'><status code='110'/><item role='moderator'/></x></presence>")


def test_strict_rejects_extra_children_and_attributes():
    exp = f"<presence><x xmlns='{MUC_USER}'><item role='moderator'/></x></presence>"
    assert not matches(exp, f"<presence><x xmlns='{MUC_USER}'><item role='moderator'/><status code='1'/></x></presence>")
    # the strictness is inherited by descendants in the same namespace
    assert not matches(exp, f"<presence><x xmlns='{MUC_USER}'><item role='moderator' nick='n'/></x></presence>")
    assert not matches(exp, f"<presence><x xmlns='{MUC_USER}' a='1'><item role='moderator'/></x></presence>")


def test_strict_ignores_text_that_the_script_leaves_blank():
    exp = "<iq><query xmlns='jabber:iq:version'><name/><version/></query></iq>"
    assert matches(exp, "<iq><query xmlns='jabber:iq:version'><name>xmppd</name><version>1</version></query></iq>")


def test_scansion_strict_true_makes_a_client_element_strict():
    exp = "<message from='r@l' scansion:strict='true'><body>x</body></message>"
    assert matches(exp, "<message from='r@l'><body>x</body></message>")
    assert not matches(exp, "<message from='r@l' id='1'><body>x</body></message>")
    assert not matches(exp, "<message from='r@l'><body>x</body><thread>t</thread></message>")


def test_scansion_strict_false_relaxes_a_namespaced_element():
    exp = "<iq><query xmlns='http://jabber.org/protocol/disco#info' scansion:strict='false'><feature var='urn:xmpp:ping'/></query></iq>"
    got = ("<iq><query xmlns='http://jabber.org/protocol/disco#info' node='n'><identity category='server' type='im'/>"
           "<feature var='a'/><feature var='urn:xmpp:ping'/></query></iq>")
    assert matches(exp, got)
    # the override is per element: the feature child stays strict
    assert not matches(exp, got.replace("var='urn:xmpp:ping'", "var='urn:xmpp:ping' extra='1'"))
    assert not matches(exp, got.replace("urn:xmpp:ping", "urn:xmpp:pong"))


def test_strict_empty_element_means_no_children():
    exp = "<iq><query xmlns='http://jabber.org/protocol/disco#info' node='x' scansion:strict='true'/></iq>"
    assert matches(exp, "<iq><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>")
    assert not matches(exp, "<iq><query xmlns='http://jabber.org/protocol/disco#info' node='x'><identity/></query></iq>")


# -- matcher: special values -------------------------------------------------------------------

def test_any_requires_presence_only():
    assert matches("<message id='{scansion:any}'/>", "<message id='abc'/>")
    assert not matches("<message id='{scansion:any}'/>", "<message/>")


def test_capture_records_then_requires_equality():
    captures = {}
    new = matcher.match(stanza("<message id='{scansion:capture:ID}'/>"), received("<message id='abc'/>"), captures)
    assert new == {"ID": "abc"}
    captures.update(new)
    assert matches("<iq id='{scansion:capture:ID}'/>", "<iq id='abc'/>", captures)
    assert not matches("<iq id='{scansion:capture:ID}'/>", "<iq id='abd'/>", captures)
    # twice in one stanza: both uses must agree
    assert matches("<iq id='{scansion:capture:X}' from='{scansion:capture:X}'/>", "<iq id='a' from='a'/>")
    assert not matches("<iq id='{scansion:capture:X}' from='{scansion:capture:X}'/>", "<iq id='a' from='b'/>")


def test_failed_match_commits_no_capture():
    exp = stanza("<message id='{scansion:capture:ID}' type='chat'/>")
    assert matcher.match(exp, received("<message id='abc' type='normal'/>"), {}) is None


def test_variables_are_substituted_in_attributes_and_text():
    values = {("Romeo", "JID"): "user@localhost", ("Romeo", "full JID"): "user@localhost/r1"}

    def resolve(name, kind):
        if (name, kind) not in values:
            raise matcher.VariableError(name)
        return values[(name, kind)]

    el = matcher.substitute(stanza("<message to=\"${Romeo's JID}\"><body>I am ${Romeo's full JID}</body></message>"), resolve)
    assert el.get("to") == "user@localhost"
    assert el.find("{jabber:client}body").text == "I am user@localhost/r1"
    with pytest.raises(matcher.VariableError):
        matcher.substitute(stanza("<message to=\"${Paris's JID}\"/>"), resolve)


def test_explain_points_at_the_difference():
    why = matcher.explain(stanza(f"<presence><x xmlns='{MUC_USER}'><status code='110'/></x></presence>"),
                          received(f"<presence><x xmlns='{MUC_USER}'><status code='100'/></x></presence>"))
    assert "code" in why and "'100'" in why and "'110'" in why


# -- wire format -------------------------------------------------------------------------------

def test_to_wire_keeps_namespaces_and_drops_scansion_attributes():
    el = stanza("<iq type='set' scansion:strict='true'><query xmlns='urn:q'><item a='&lt;&apos;'>t&amp;t</item></query></iq>")
    wire = to_wire(el)
    assert "scansion" not in wire
    back = received(wire)
    assert back.tag == "{jabber:client}iq" and back.get("type") == "set"
    item = back.find("{urn:q}query/{urn:q}item")
    assert item.get("a") == "<'" and item.text == "t&t"
    assert matcher.match(el, back) is not None


def test_to_xml_report_format_parses_back():
    el = stanza(f"<presence from='a'><x xmlns='{MUC_USER}' scansion:strict='false'><item jid='j'/></x></presence>")
    assert matcher.match(el, received(matcher.to_xml(el).replace(" scansion:strict='false'", ""))) is not None


def test_stream_parser_handles_arbitrary_chunking():
    data = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' id='1'>"
            b"<message from='a'><body>h\xc3\xa9</body></message><presence/></stream:stream>")
    for size in (1, 3, 7, len(data)):
        p = StreamParser()
        events = []
        for i in range(0, len(data), size):
            events.extend(p.feed(data[i:i + size]))
        assert [kind for kind, _ in events] == ["open", "element", "element", "close"]
        assert events[1][1].find("{jabber:client}body").text == "hé"


def test_split_jid():
    assert split_jid("user@localhost/res/with/slash") == ("user", "localhost", "res/with/slash")
    assert split_jid("user@localhost") == ("user", "localhost", "")


# -- end to end against Prosody, the reference ------------------------------------------------

def _prosody_available():
    return shutil.which("prosody") is not None and RUN_PROSODY.exists()


@pytest.fixture
def prosody(tmp_path):
    """A fresh private Prosody 0.12 (scripts/run-prosody, foreground) on a free port."""
    if not _prosody_available():
        pytest.skip("prosody is not installed")
    state = tmp_path / "prosody"
    proc = subprocess.Popen([sys.executable, str(RUN_PROSODY), "--port", "0", "--dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if not line.startswith("prosody listening on "):
        proc.kill()
        pytest.fail(f"run-prosody did not start: {line}{proc.stdout.read()}")
    proc.port = int(line.rsplit(":", 1)[1])
    yield proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    proc.stdout.close()


SHARED_SCRIPTS = sorted(SHARED.glob("*.scs")) if SHARED.is_dir() else []


@pytest.mark.parametrize("path", SHARED_SCRIPTS, ids=[p.name for p in SHARED_SCRIPTS])
def test_shared_scripts_pass_against_prosody(prosody, path):
    """Prosody's own MUC tests pass against Prosody with our runner: proves client and matcher."""
    result = run_file(path, port=prosody.port, timeout=5)
    assert result.ok, result.failure.report()
    assert result.steps_run == result.steps_total


def test_superseded_script_fails_against_prosody_with_a_useful_report(prosody):
    """The 2018 revision expects a register form without <required/>: Prosody 0.12 sends it, and
    the strict x:data field must therefore fail (README: the current script wins)."""
    path = SHARED / "superseded" / "muc_register_2018.scs"
    if not path.exists():
        pytest.skip("superseded script not present")
    result = run_file(path, port=prosody.port, timeout=2)
    assert not result.ok
    report = result.failure.report()
    assert f"{path}:{result.failure.line}:" in report
    assert "muc#register_roomnick" in report and "<required/>" in report
    assert "(strict): 1 children ['required']" in report


def _write(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body).lstrip())
    return p


def test_mismatch_and_nothing_are_failures_against_prosody(prosody, tmp_path, capsys):
    header = """\
        [Client] Romeo
        	jid: user@localhost/balcony
        	password: password

        -----

        Romeo connects
        """
    good = _write(tmp_path, "good.scs", header + """
        Romeo sends:
        	<iq type='get' to='localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>

        Romeo receives:
        	<iq type='result' from='localhost' id='p1' to="${Romeo's full JID}"/>

        Romeo receives: nothing

        Romeo disconnects
        """)
    wrong = _write(tmp_path, "wrong.scs", header + """
        Romeo sends:
        	<iq type='get' to='localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>

        Romeo receives:
        	<iq type='result' from='localhost' id='p2'/>
        """)
    noisy = _write(tmp_path, "noisy.scs", header + """
        Romeo sends:
        	<message to="user@localhost/balcony" type='chat'><body>echo</body></message>

        Romeo receives: nothing
        """)
    port = str(prosody.port)
    assert cli_main(["--port", port, str(good)]) == 0
    out = capsys.readouterr().out
    assert f"PASS {good}" in out and "1 passed, 0 failed" in out

    assert cli_main(["--port", port, "--timeout", "1", str(good), str(wrong), str(noisy)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {wrong}:12: Romeo: no matching stanza" in out
    assert "id='p2'" in out  # the expected stanza
    assert "id='p1'" in out and "attribute id='p1', expected 'p2'" in out  # what came instead, and why
    assert f"FAIL {noisy}:12: Romeo: expected to receive nothing" in out
    assert "<body>echo</body>" in out
    assert "1 passed, 2 failed" in out


def test_connect_failure_is_reported(tmp_path, capsys):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = _write(tmp_path, "c.scs", """\
        [Client] Romeo
        	jid: user@localhost
        	password: password
        -----
        Romeo connects
        """)
    assert cli_main(["--port", str(port), "--timeout", "1", str(p)]) == 1
    assert f"FAIL {p}:5: Romeo: connect failed: cannot connect" in capsys.readouterr().out


def test_run_prosody_background_and_stop(tmp_path):
    if not _prosody_available():
        pytest.skip("prosody is not installed")
    state = tmp_path / "bg"
    out = subprocess.run([sys.executable, str(RUN_PROSODY), "--port", "0", "--background", "--dir", str(state)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    fields = dict(kv.split("=", 1) for kv in out.stdout.splitlines()[1].split())
    pid = int(fields["pid"])
    try:
        os.kill(pid, 0)  # running
        assert (state / "prosody.cfg.lua").exists()
    finally:
        stopped = subprocess.run([sys.executable, str(RUN_PROSODY), "--stop", str(state)],
                                 capture_output=True, text=True, timeout=30)
    assert stopped.returncode == 0 and f"stopped prosody {pid}" in stopped.stdout


def test_scansion_script_uses_a_fresh_server_per_file(tmp_path):
    """scripts/scansion starts a server per script, so the same room script passes twice in a row."""
    own = REPO_ROOT / "tests" / "scenarios" / "c2s_ping_server.scs"
    bad = _write(tmp_path, "bad.scs", """\
        [Client] Romeo
        	jid: user@localhost
        	password: password
        -----
        Romeo connects
        Romeo sends:
        	<iq type='get' to='localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>
        Romeo receives:
        	<iq type='result' id='p1' from='elsewhere'/>
        """)
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "scansion"), "--timeout", "1", "-v",
                          str(own), str(own), str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.count(f"PASS {own}") == 2
    assert f"FAIL {bad}:8: Romeo: no matching stanza" in out.stdout
    assert "2 passed, 1 failed (server: xmppd)" in out.stdout
    # -v traces the traffic but never the SASL credentials
    assert "<ping xmlns='urn:xmpp:ping'/>" in out.stderr
    assert "(credentials not shown)" in out.stderr and "AHVzZXIAcGFzc3dvcmQ=" not in out.stderr


def test_strictness_is_inherited_by_descendants_even_in_the_client_namespace():
    """README: strict elements 'and all their descendants'; the override is per element."""
    exp = "<message><x xmlns='urn:x'><body xmlns='jabber:client'>t</body></x></message>"
    assert matches(exp, "<message><x xmlns='urn:x'><body xmlns='jabber:client'>t</body></x></message>")
    assert not matches(exp, "<message><x xmlns='urn:x'><body xmlns='jabber:client' xml:lang='en'>t</body></x></message>")
    relaxed = "<message><x xmlns='urn:x'><body xmlns='jabber:client' scansion:strict='false'>t</body></x></message>"
    assert matches(relaxed, "<message><x xmlns='urn:x'><body xmlns='jabber:client' xml:lang='en'>t</body></x></message>")
    # an override on a parent does not relax its namespaced children
    exp2 = "<iq><query xmlns='urn:q' scansion:strict='false'><item a='1'/></query></iq>"
    assert matches(exp2, "<iq><query xmlns='urn:q'><other/><item a='1'/></query></iq>")
    assert not matches(exp2, "<iq><query xmlns='urn:q'><item a='1' b='2'/></query></iq>")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_prosody_foreground_stops_cleanly_and_removes_its_temp_dir(sig):
    if not _prosody_available():
        pytest.skip("prosody is not installed")
    proc = subprocess.Popen([sys.executable, str(RUN_PROSODY), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().startswith("prosody listening on 127.0.0.1:")
        info = proc.stdout.readline()
        fields = dict(kv.split("=", 1) for kv in info.split(" (")[0].split())
        state, pid = Path(fields["dir"]), int(fields["pid"])
        assert (state / "prosody.cfg.lua").exists()
        proc.send_signal(sig)
        assert proc.wait(15) == 0
        assert not state.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
