"""Fuzzing a live server: random and mutated stanzas over a real socket.

Each hypothesis example is one *batch*: a fresh connection (authenticated,
or not for the pre-auth mode) sends a few stanzas drawn from a corpus of
valid ones, mutated at the byte or the XML level, or generated from a
small grammar. After every batch a long-lived second client must get a
ping answered, the fuzzed connection must have either answered its own
ping or ended with a proper stream error, and at the end the server log
must contain no traceback (an unexpected exception anywhere is a finding).

The CI run is seeded (derandomized) and bounded to a few seconds;
``scripts/fuzz`` runs many more examples with a random seed:
``XMPPD_FUZZ_EXAMPLES`` (default 60) and ``XMPPD_FUZZ_SEED`` select them.
"""
import os
import random
import re
import socket
import time
import xml.etree.ElementTree as ET
from xml.parsers import expat

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from test_c2s_raw import Raw, StreamClosed, start_server
from test_hardening import login, ping

EXAMPLES = int(os.environ.get("XMPPD_FUZZ_EXAMPLES", "60"))
SEED = os.environ.get("XMPPD_FUZZ_SEED")
ROOM = "fuzz@conference.localhost"

CORPUS = [
    "<message to='fuzzer@localhost' type='chat' id='m1'><body>hello &amp; bye</body></message>",
    "<message to='other@localhost/r' type='chat'><body>x</body><thread>t1</thread></message>",
    "<message to='localhost'><body>to server</body></message>",
    "<message to='fuzzer@localhost' type='headline'><subject>s</subject></message>",
    "<message to='fuzzer@localhost' type='error'><error type='cancel'>"
    "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
    "<presence/>",
    "<presence type='unavailable'><status>bye</status></presence>",
    "<presence><show>away</show><priority>5</priority><status>s</status></presence>",
    "<presence to='other@localhost' type='subscribe'/>",
    "<presence to='other@localhost/r'/>",
    "<presence type='probe' to='other@localhost'/>",
    "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    "<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    "<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    "<iq type='get' id='reg1'><query xmlns='jabber:iq:register'/></iq>",
    "<iq type='set' id='reg2'><query xmlns='jabber:iq:register'><username>other</username>"
    "<password>x</password></query></iq>",
    "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
    "<iq type='get' id='u1' to='other@localhost'><query xmlns='urn:x:unknown'/></iq>",
    "<iq type='result' id='r2' to='other@localhost/r'/>",
    f"<presence to='{ROOM}/fuzzer'><x xmlns='http://jabber.org/protocol/muc'>"
    "<history maxstanzas='5'/></x></presence>",
    f"<message to='{ROOM}' type='groupchat' id='g1'><body>hi room</body></message>",
    f"<message to='{ROOM}' type='groupchat'><subject>topic</subject></message>",
    f"<message to='{ROOM}/someone' type='chat'><body>pm</body></message>",
    f"<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'>"
    "<invite to='other@localhost'><reason>come</reason></invite></x></message>",
    f"<iq type='get' id='a1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
    "<item affiliation='member'/></query></iq>",
    f"<iq type='set' id='a2' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
    "<item jid='other@localhost' affiliation='outcast'><reason>r</reason></item></query></iq>",
    f"<iq type='set' id='a3' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
    "<item nick='someone' role='visitor'/></query></iq>",
    f"<iq type='get' id='o1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>",
    f"<iq type='set' id='o2' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
    "<value>http://jabber.org/protocol/muc#roomconfig</value></field>"
    "<field var='muc#roomconfig_maxusers'><value>10</value></field>"
    "<field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query></iq>",
    f"<iq type='set' id='o3' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
    "<destroy jid='other@conference.localhost'><reason>gone</reason></destroy></query></iq>",
    f"<iq type='get' id='g2' to='{ROOM}'><query xmlns='jabber:iq:register'/></iq>",
    f"<iq type='get' id='g3' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    "<iq type='get' id='g4' to='conference.localhost'>"
    "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    f"<iq type='get' id='g5' to='{ROOM}/someone'><ping xmlns='urn:xmpp:ping'/></iq>",
    f"<presence to='{ROOM}/fuzzer' type='unavailable'/>",
    # issue 14: self-ping (XEP-0410), forged occupant-id (XEP-0421), emoji nicks (query profile)
    f"<iq type='get' id='sp1' to='{ROOM}/fuzzer'><ping xmlns='urn:xmpp:ping'/></iq>",
    f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
    "<value>http://jabber.org/protocol/muc#register</value></field><field var='muc#jid'>"
    "<value>other@localhost</value></field><field var='muc#register_allow'><value>1</value>"
    "</field></x></message>",
    f"<iq type='set' id='md1' to='{ROOM}'><moderate id='x' xmlns='urn:xmpp:message-moderate:1'>"
    "<retract xmlns='urn:xmpp:message-retract:1'/><reason>r</reason></moderate></iq>",
    f"<message to='{ROOM}' type='groupchat'><body>b</body>"
    "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>",
    f"<presence to='{ROOM}/\U0001f916'><occupant-id xmlns='urn:xmpp:occupant-id:0' id='x'/>"
    "<x xmlns='http://jabber.org/protocol/muc'/></presence>",
    "<iq type='set' id='c1' to='conference.localhost'><command xmlns='http://jabber.org/protocol/commands' "
    "node='http://prosody.im/protocol/muc#destroy' action='execute'/></iq>",
    # XEP-0357 push (the local full JID is a valid App Server; the fuzzer's offline messages notify it)
    "<iq type='set' id='pu1'><enable xmlns='urn:xmpp:push:0' jid='other@localhost/r' node='n1'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
    "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
    "<field var='secret'><value>s</value></field></x></enable></iq>",
    "<iq type='set' id='pu2'><enable xmlns='urn:xmpp:push:0' jid='push.example.net' node='n'/></iq>",
    "<iq type='set' id='pu3'><disable xmlns='urn:xmpp:push:0' jid='other@localhost/r'/></iq>",
    "<iq type='set' id='pu4' to='other@localhost'><disable xmlns='urn:xmpp:push:0' jid='x'/></iq>",
    "<iq type='error' id='push-00' to='fuzzer@localhost'><error type='cancel'>"
    "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    # XEP-0191 blocking, XEP-0280 carbons
    "<iq type='get' id='bl1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    "<iq type='set' id='bl2'><block xmlns='urn:xmpp:blocking'><item jid='other@localhost'/>"
    "<item jid='x.example'/></block></iq>",
    "<iq type='set' id='bl3'><unblock xmlns='urn:xmpp:blocking'><item jid='other@localhost'/></unblock></iq>",
    "<iq type='set' id='bl4' to='other@localhost'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    "<iq type='set' id='cb1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    "<iq type='set' id='cb2' to='other@localhost'><disable xmlns='urn:xmpp:carbons:2'/></iq>",
    "<message to='other@localhost/r' type='chat'><body>p</body><private xmlns='urn:xmpp:carbons:2'/>"
    "<no-copy xmlns='urn:xmpp:hints'/></message>",
    "<message to='fuzzer@localhost/r' type='chat'><received xmlns='urn:xmpp:carbons:2'>"
    "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'><body>f</body></message>"
    "</forwarded></received></message>",
    # XEP-0133 service administration (the fuzzing account is an admin)
    "<iq type='get' id='ac1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items' "
    "node='http://jabber.org/protocol/commands'/></iq>",
    "<iq type='set' id='ac2' to='localhost'><command xmlns='http://jabber.org/protocol/commands' "
    "node='http://jabber.org/protocol/admin#add-user' action='execute'/></iq>",
    "<iq type='set' id='ac3' to='localhost'><command xmlns='http://jabber.org/protocol/commands' "
    "node='http://jabber.org/protocol/admin#add-user' action='complete' sessionid='s'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
    "<value>http://jabber.org/protocol/admin</value></field>"
    "<field var='accountjid'><value>fz@localhost</value></field>"
    "<field var='password'><value>p</value></field>"
    "<field var='password-verify'><value>p</value></field></x></command></iq>",
    "<iq type='set' id='ac4' to='localhost'><command xmlns='http://jabber.org/protocol/commands' "
    "node='http://jabber.org/protocol/admin#get-online-users-list' action='complete'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='max_items'><value>all</value></field>"
    "</x></command></iq>",
    "<iq type='set' id='ac5' to='localhost'><command xmlns='http://jabber.org/protocol/commands' "
    "node='http://jabber.org/protocol/admin#announce' action='complete'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='subject'><value>s</value></field>"
    "<field var='announcement'><value>line 1</value><value>line 2</value></field>"
    "</x></command></iq>",
    "<iq type='set' id='ac6' to='localhost'><command xmlns='http://jabber.org/protocol/commands' "
    "node='http://jabber.org/protocol/admin#set-motd' action='complete'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='motd'><value>hello</value></field>"
    "</x></command></iq>",
    "<iq type='set' id='ac7' to='localhost'><command xmlns='http://jabber.org/protocol/commands' "
    "node='http://jabber.org/protocol/admin#get-registered-users-num'/></iq>",
    # XEP-0198 stream management, XEP-0352 client state (nonzas)
    "<enable xmlns='urn:xmpp:sm:3' resume='true' max='99999999999'/>",
    "<enable xmlns='urn:xmpp:sm:3'/>",
    "<r xmlns='urn:xmpp:sm:3'/>",
    "<a xmlns='urn:xmpp:sm:3' h='0'/>",
    "<a xmlns='urn:xmpp:sm:3' h='4294967295'/>",
    "<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>",
    "<inactive xmlns='urn:xmpp:csi:0'/>",
    "<active xmlns='urn:xmpp:csi:0'/>",
    # message archives (XEP-0313) of the account and of the room, stanza ids (XEP-0359)
    "<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='f1'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
    "<value>urn:xmpp:mam:2</value></field><field var='with'><value>other@localhost</value>"
    "</field><field var='start'><value>2020-01-01T00:00:00Z</value></field></x>"
    "<set xmlns='http://jabber.org/protocol/rsm'><max>5</max><before/></set><flip-page/>"
    "</query></iq>",
    "<iq type='set' id='mam2'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' "
    "type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>"
    "<field var='ids'><value>abc</value></field><field var='after-id'><value>x</value></field>"
    "</x><set xmlns='http://jabber.org/protocol/rsm'><after>zzz</after></set></query></iq>",
    "<iq type='get' id='mam3'><query xmlns='urn:xmpp:mam:2'/></iq>",
    "<iq type='set' id='mam4'><prefs xmlns='urn:xmpp:mam:2' default='roster'><always>"
    "<jid>other@localhost</jid></always><never/></prefs></iq>",
    f"<iq type='set' id='mam5' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='r'>"
    "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set></query></iq>",
    "<message to='other@localhost' type='chat'><body>x</body>"
    "<stanza-id xmlns='urn:xmpp:sid:0' by='other@localhost' id='forged'/></message>",
]
# personal data (issue 11): PEP/pubsub, vCard, private storage, bookmarks, caps
PS = "http://jabber.org/protocol/pubsub"
CORPUS += [
    f"<iq type='set' id='ps1'><pubsub xmlns='{PS}'><publish node='urn:x:n'><item id='1'>"
    "<geoloc xmlns='http://jabber.org/protocol/geoloc'><lat>1</lat></geoloc></item></publish>"
    "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
    f"<value>{PS}#publish-options</value></field><field var='pubsub#access_model'><value>open</value>"
    "</field><field var='pubsub#max_items'><value>max</value></field></x></publish-options></pubsub></iq>",
    f"<iq type='get' id='ps2' to='fuzzer@localhost'><pubsub xmlns='{PS}'><items node='urn:x:n' "
    "max_items='2'><item id='1'/></items></pubsub></iq>",
    f"<iq type='set' id='ps3' to='other@localhost'><pubsub xmlns='{PS}'><subscribe node='urn:x:n' "
    "jid='fuzzer@localhost'/></pubsub></iq>",
    f"<iq type='set' id='ps4'><pubsub xmlns='{PS}'><retract node='urn:x:n' notify='true'>"
    "<item id='1'/></retract></pubsub></iq>",
    f"<iq type='set' id='ps5'><pubsub xmlns='{PS}#owner'><configure node='urn:x:n'>"
    "<x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>3</value></field>"
    "</x></configure></pubsub></iq>",
    f"<iq type='set' id='ps6'><pubsub xmlns='{PS}#owner'><delete node='urn:x:n'/></pubsub></iq>",
    "<iq type='set' id='vc1'><vCard xmlns='vcard-temp'><FN>F</FN><PHOTO><TYPE>image/png</TYPE>"
    "<BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>",
    "<iq type='get' id='vc2' to='other@localhost'><vCard xmlns='vcard-temp'/></iq>",
    "<iq type='set' id='pr1'><query xmlns='jabber:iq:private'><prefs xmlns='urn:x:p'>v</prefs></query></iq>",
    "<iq type='set' id='bm1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
    "<conference jid='r@conference.localhost' autojoin='true'><nick>n</nick></conference>"
    "</storage></query></iq>",
    f"<iq type='set' id='bm2'><pubsub xmlns='{PS}'><publish node='urn:xmpp:bookmarks:1'>"
    "<item id='r@conference.localhost'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'/>"
    "</item></publish></pubsub></iq>",
    "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:x' "
    "ver='QgayPKawpkPSDYmwT/WM94uAlu0='/><x xmlns='vcard-temp:x:update'><photo>ab</photo></x></presence>",
    "<iq type='result' id='caps-0' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
]

NAMES = ["message", "presence", "iq", "body", "query", "x", "item", "error", "field", "value",
         "subject", "destroy", "invite", "history", "ping", "show", "priority", "occupant-id", "a",
         "block", "unblock", "blocklist", "enable", "disable", "private", "forwarded",
         "r", "resume", "enabled", "inactive", "active",
         "pubsub", "publish", "items", "retract", "publish-options", "vCard", "PHOTO", "BINVAL",
         "storage", "conference", "c", "photo",
         "set", "max", "after", "before", "prefs", "stanza-id"]
NAMESPACES = ["", "jabber:client", "urn:xmpp:ping", "http://jabber.org/protocol/muc",
              "http://jabber.org/protocol/muc#user", "http://jabber.org/protocol/muc#admin",
              "http://jabber.org/protocol/muc#owner", "jabber:x:data", "jabber:iq:register",
              "http://jabber.org/protocol/disco#info", "urn:ietf:params:xml:ns:xmpp-stanzas",
              "http://etherx.jabber.org/streams", "urn:x", "urn:xmpp:occupant-id:0", "urn:xmpp:blocking",
              "urn:xmpp:carbons:2", "urn:xmpp:forward:0", "urn:xmpp:sm:3", "urn:xmpp:csi:0",
              "http://jabber.org/protocol/pubsub", "http://jabber.org/protocol/pubsub#owner",
              "vcard-temp", "vcard-temp:x:update", "jabber:iq:private", "storage:bookmarks",
              "urn:xmpp:bookmarks:1", "http://jabber.org/protocol/caps",
              "urn:xmpp:mam:2",
              "http://jabber.org/protocol/rsm", "urn:xmpp:sid:0"]
ATTRS = ["to", "from", "type", "id", "xml:lang", "jid", "nick", "role", "affiliation", "var",
         "maxstanzas", "maxchars", "seconds", "since", "code", "node", "action", "h", "previd",
         "resume", "max",
         "max_items", "hash", "ver", "autojoin", "notify"]
VALUES = ["", "get", "set", "result", "error", "groupchat", "chat", "headline", "normal",
          "unavailable", "subscribe", "probe", "none", "owner", "admin", "member", "outcast",
          "moderator", "participant", "visitor", "localhost", "conference.localhost", ROOM,
          f"{ROOM}/x", "fuzzer@localhost", "a..b", "@", "/", "-1", "0", "99999999999999999999",
          "1970-01-01T00:00:00Z", "not-a-date", "\u202e", "\U0001f600", "x" * 300, "&amp;&lt;"]

texts = st.one_of(st.sampled_from(VALUES), st.text(max_size=40))


def _esc(s):
    s = "".join(ch for ch in s if ch in "\t\n\r" or (ch >= " " and ch not in "\ufffe\uffff"
                                                      and not "\ud800" <= ch <= "\udfff"))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")


@st.composite
def elements(draw, depth=0):
    name = draw(st.sampled_from(NAMES))
    ns = draw(st.sampled_from(NAMESPACES))
    attrs = draw(st.dictionaries(st.sampled_from(ATTRS), texts, max_size=4))
    out = f"<{name}"
    if ns and depth > 0:
        out += f" xmlns='{_esc(ns)}'"
    for k, v in attrs.items():
        out += f" {k}='{_esc(v)}'"
    children = draw(st.lists(st.deferred(lambda: elements(depth + 1)), max_size=3)) if depth < 4 else []
    text = draw(st.one_of(st.just(""), texts))
    if not children and not text:
        return out + "/>"
    return out + ">" + _esc(text) + "".join(children) + f"</{name}>"


@st.composite
def generated_stanza(draw):
    """A top-level stanza with hostile 'to'/'type' around a generated payload."""
    top = draw(st.sampled_from(["message", "presence", "iq"]))
    payload = draw(elements(depth=1))
    return f"<{top} to='{_esc(draw(texts))}' type='{_esc(draw(texts))}' id='gen'>{payload}</{top}>"


@st.composite
def byte_mutation(draw):
    data = bytearray(draw(st.sampled_from(CORPUS)).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"<", b">", b"'", b"&", b"/", b"\x00", b"\xff",
                                              b"<!--", b"<?x?>", b"<![CDATA[", b"]]>", b"&#0;",
                                              b"xmlns:a='b' ", b"</stream:stream>"]))
        elif op == "delete":
            j = draw(st.integers(i, min(len(data), i + 20)))
            del data[i:j]
        elif op == "dup":
            j = draw(st.integers(i, min(len(data), i + 40)))
            data[i:i] = data[i:j]
        elif op == "truncate":
            del data[i:]
    return bytes(data)


@st.composite
def attr_mutation(draw):
    """Valid XML, hostile values: replace one attribute value or the text of the corpus item."""
    s = draw(st.sampled_from(CORPUS))
    attrs = list(re.finditer(r"(\w+)='([^']*)'", s))
    if not attrs:
        return s
    m = draw(st.sampled_from(attrs))
    return s[:m.start(2)] + _esc(draw(texts)) + s[m.end(2):]


stanzas = st.one_of(
    st.sampled_from(CORPUS),
    attr_mutation(),
    attr_mutation(),
    generated_stanza(),
    byte_mutation(),
)

batches = st.tuples(st.sampled_from(["auth", "auth", "auth", "preauth"]), st.booleans(),
                    st.lists(stanzas, min_size=1, max_size=6))


class Fuzz:
    def __init__(self, server):
        self.server = server
        # The checker sits in the fuzz room as 'someone' (a target for occupant
        # operations); batches log in as the same account, so they are owners.
        self.checker = login(server.port, "checker", "c")
        self.checker.send(f"<presence to='{ROOM}/someone'><x xmlns='http://jabber.org/protocol/muc'/>"
                          "</presence>")
        self.batches = 0
        self.stanzas = 0
        self.stream_errors = 0


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth",
                       config="max_stanza_size = 65536\nmuc_message_rate = 0\n"
                              "admins = ['checker@localhost']\n")
    f = Fuzz(srv)
    yield f
    f.checker.close()
    log = srv.log()
    srv.stop()
    print(f"\nfuzz: {f.batches} batches, {f.stanzas} stanzas, {f.stream_errors} stream errors")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


def _quick_login(port):
    """PLAIN without TLS (allowed on loopback in dev mode): fuzz batches stay cheap."""
    c = Raw(port, timeout=5)
    c.open()
    import base64
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
           + base64.b64encode(b"\0checker\0pw").decode() + "</auth>")
    c.next()
    c.open()
    c.bind(f"f{random.getrandbits(32)}")
    return c


def _settings():
    s = settings(max_examples=EXAMPLES, deadline=None, database=None,
                 derandomize=SEED is None,
                 suppress_health_check=list(HealthCheck))
    return s


def _assert_well_formed(data):
    """The server's output so far parses as (an unfinished) XML document."""
    p = expat.ParserCreate()           # no namespace processing
    try:
        p.Parse(data, False)
    except expat.ExpatError as e:
        raise AssertionError(f"server sent malformed XML ({e}): {data[-500:]!r}") from None


def _run_batch(fuzz, mode, join, items):
    port = fuzz.server.port
    c = _quick_login(port) if mode == "auth" else Raw(port, timeout=5)
    try:
        if mode == "preauth":
            c.open()
        elif join:
            c.send(f"<presence to='{ROOM}/fuzzer'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
        for item in items:
            data = item if isinstance(item, bytes) else item.encode("utf-8")
            try:
                c.send(data)
            except OSError:
                break
            fuzz.stanzas += 1
        closed = False
        try:
            if mode == "auth":
                ping(c, ident="after-batch")
            else:
                c.send("<iq type='get' id='after-batch'/>")   # not authorised: a stream error
                closed = True
                c.wait_closed()
        except (StreamClosed, OSError):
            closed = True
        except ET.ParseError:
            # ElementTree cannot represent a namespace containing '}' (its own
            # separator); the server output must still be well-formed XML
            _assert_well_formed(c.raw)
            closed = True
        except AssertionError:
            # the batch may have left an unfinished element open: then nothing can
            # answer, and the client closing is what a real client would do
            closed = True
        if closed and c.raw:
            if b"<stream:error>" in c.raw:
                fuzz.stream_errors += 1
                tail = c.raw[c.raw.rindex(b"<stream:error>"):]
                assert tail.endswith(b"</stream:stream>"), tail[:300]
    finally:
        c.close()
    fuzz.batches += 1
    assert fuzz.server.returncode is None, fuzz.server.log()[-3000:]
    assert ping(fuzz.checker).get("type") == "result"


def test_fuzz_batches(fuzz):
    test = given(batches)(lambda batch: _run_batch(fuzz, *batch))
    test = _settings()(test)
    if SEED is not None:
        test = seed(int(SEED))(test)
    test()
    assert fuzz.batches >= EXAMPLES // 2


def test_server_still_serves_new_clients_after_fuzzing(fuzz):
    c = login(fuzz.server.port, "afterfuzz", "r")
    try:
        assert ping(c).get("type") == "result"
    finally:
        c.close()


# -- the XEP-0114 component stream (xmppd.component.server) ----------------------------------

FUZZ_COMPONENT = "fuzzbot.localhost"
FUZZ_SECRET = "fuzz-secret"


def _component_from(item):
    """Give a client-corpus stanza a 'from' at the component's domain (bytes or str)."""
    data = item if isinstance(item, bytes) else item.encode("utf-8")
    return re.sub(rb"^<(message|presence|iq)\b", rb"<\1 from='x@" + FUZZ_COMPONENT.encode() + rb"/r'",
                  data, count=1)


component_stanzas = st.one_of(st.sampled_from(CORPUS), attr_mutation(), generated_stanza(),
                              byte_mutation()).map(_component_from)


@pytest.fixture(scope="module")
def component_fuzz(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--insecure-auth", config=(
        "max_stanza_size = 65536\ncomponent_port = 0\n"
        f"[[components]]\ndomain = '{FUZZ_COMPONENT}'\nsecret = '{FUZZ_SECRET}'\n"))
    srv.component_port = int(srv.wait_for_log(r"component listening on \S+:(\d+)")[1])
    f = Fuzz(srv)
    yield f
    f.checker.close()
    log = srv.log()
    srv.stop()
    print(f"\ncomponent fuzz: {f.batches} batches, {f.stanzas} stanzas, "
          f"{f.stream_errors} stream errors")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


def _component_login(port):
    """Handshake as the fuzz component; retried while the previous batch's link is going away."""
    import hashlib
    deadline = time.monotonic() + 5
    while True:
        c = Raw(port, timeout=5)
        c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
               f"xmlns:stream='http://etherx.jabber.org/streams' to='{FUZZ_COMPONENT}'>")
        while c.header is None:
            c._pump(time.monotonic() + 5)
        sid = c.header.get("id")
        c.send("<handshake>%s</handshake>" % hashlib.sha1((sid + FUZZ_SECRET).encode()).hexdigest())
        el = c.next()
        if el.tag.endswith("handshake"):
            return c
        c.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"component handshake refused: {c.raw!r}")
        time.sleep(0.05)


def _run_component_batch(fuzz, items):
    c = _component_login(fuzz.server.component_port)
    try:
        for data in items:
            try:
                c.send(data)
            except OSError:
                break
            fuzz.stanzas += 1
        try:
            c.send(f"<iq type='get' from='{FUZZ_COMPONENT}' to='localhost' id='after-batch'>"
                   "<ping xmlns='urn:xmpp:ping'/></iq>")
            while c.next().get("id") != "after-batch":
                pass
        except (StreamClosed, OSError, AssertionError):
            pass
        except ET.ParseError:
            _assert_well_formed(c.raw)
        if b"<stream:error>" in c.raw:
            fuzz.stream_errors += 1
            tail = c.raw[c.raw.rindex(b"<stream:error>"):]
            assert tail.endswith(b"</stream:stream>"), tail[:300]
    finally:
        c.close()
    fuzz.batches += 1
    assert fuzz.server.returncode is None, fuzz.server.log()[-3000:]
    assert ping(fuzz.checker).get("type") == "result"


def test_fuzz_component_stream(component_fuzz):
    test = given(st.lists(component_stanzas, min_size=1, max_size=6))(
        lambda items: _run_component_batch(component_fuzz, items))
    test = _settings()(test)
    if SEED is not None:
        test = seed(int(SEED))(test)
    test()
    assert component_fuzz.batches >= EXAMPLES // 2


# -- SASL: SCRAM and PLAIN garbage against real stored accounts ------------------------

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SASL_MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "PLAIN", "SCRAM-SHA-512", ""]
SCRAM_KEYS = list("nrcpmsiahex") + ["", "nn", "=="]
SCRAM_VALUES = ["", "saslchecker", "=2C", "=3D", "=ZZ", "=", ",", "biws", "eSws", "AAAA", "!!",
                "x" * 5000, "\u00e9", "\0", "n,,", "p=tls-exporter", "4096", "-1",
                "99999999999999999999", "r" * 40]


@st.composite
def scram_message(draw):
    """A client-first/final message: a valid one mutated, or attributes from a grammar."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        flag = draw(st.sampled_from(["n", "y", "p=tls-exporter", "p=tls-unique", "p=", "q", ""]))
        authz = draw(st.sampled_from(["", "a=saslchecker@localhost", "a=", "a=x=2C", "b=1"]))
        user = draw(st.one_of(st.sampled_from(SCRAM_VALUES), st.text(max_size=20)))
        nonce = draw(st.one_of(st.sampled_from(SCRAM_VALUES), st.text(max_size=20)))
        msg = f"{flag},{authz},n={user},r={nonce}"
    elif kind == 1:
        attrs = draw(st.lists(st.tuples(st.sampled_from(SCRAM_KEYS),
                                        st.one_of(st.sampled_from(SCRAM_VALUES), st.text(max_size=20))),
                              max_size=6))
        msg = ",".join(f"{k}={v}" for k, v in attrs)
    else:
        return draw(st.binary(max_size=200))
    return msg.encode("utf-8", "surrogatepass")


@st.composite
def sasl_payload(draw):
    """The element text: base64 of a message, '=', empty, or not base64 at all."""
    how = draw(st.integers(0, 5))
    if how == 0:
        return draw(st.sampled_from(["", "=", "!!!", "a", "====", "YQ", " \n"]))
    import base64
    return base64.b64encode(draw(scram_message())).decode()


sasl_batches = st.tuples(st.sampled_from(SASL_MECHS), sasl_payload(),
                         st.lists(st.one_of(sasl_payload(), st.just("<abort/>")), max_size=3))


@pytest.fixture(scope="module")
def sasl_fuzz(tmp_path_factory):
    import subprocess
    import sys
    from conftest import REPO_ROOT, server_env
    data_dir = tmp_path_factory.mktemp("saslfuzz")
    subprocess.run([sys.executable, "-m", "xmppd.ctl", "--data-dir", str(data_dir), "adduser",
                    "saslchecker"], input="secret\n", text=True, check=True, cwd=REPO_ROOT,
                   env=server_env(), capture_output=True)
    cfg = data_dir / "xmppd.toml"
    cfg.write_text("scram_iterations = 4096\nauth_failure_window = 0\n")
    from conftest import XmppdServer
    srv = XmppdServer(["--c2s-port", "0", "--data-dir", str(data_dir), "--config", str(cfg)],
                      data_dir).wait_listening()
    checker = login(srv.port, "saslchecker", "c")
    yield srv, checker
    checker.close()
    log = srv.log()
    srv.stop()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


def _run_sasl_batch(sasl_fuzz, mech, payload, responses):
    srv, checker = sasl_fuzz
    c = Raw(srv.port, timeout=5)
    try:
        c.open()
        try:
            c.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{payload}</auth>")
            for r in responses:
                c.send(f"<abort xmlns='{NS_SASL}'/>" if r == "<abort/>"
                       else f"<response xmlns='{NS_SASL}'>{r}</response>")
            c.send("</stream:stream>")
        except OSError:
            pass        # the server already ended the stream (e.g. too many failures)
        try:
            c.wait_closed()
        except AssertionError:
            pass
        _assert_well_formed(c.raw)
        # every answer is a SASL element from RFC 6120 §6.4 (or a stream error)
        after = c.raw.split(b"</stream:features>", 1)[-1]
        for name in re.findall(rb"<(\w+) xmlns='" + NS_SASL.encode() + rb"'", after):
            assert name in (b"challenge", b"failure", b"success"), c.raw
    finally:
        c.close()
    assert srv.returncode is None, srv.log()[-3000:]
    assert ping(checker).get("type") == "result"


def test_fuzz_sasl_exchanges(sasl_fuzz):
    test = given(sasl_batches)(lambda batch: _run_sasl_batch(sasl_fuzz, *batch))
    test = _settings()(test)
    if SEED is not None:
        test = seed(int(SEED))(test)
    test()

