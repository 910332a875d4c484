"""Writes run on the storage writer thread; the client is answered after the commit, in order.

A room change that is stored (persistent room) is acknowledged only once
committed, and the room's later stanzas wait for that acknowledgement, so
what each client sees is in the order of the requests even when they are
pipelined in one packet. A subject that cannot be stored is not broadcast.
"""
import resource

import pytest

from test_c2s_raw import C, stanza_error
from test_durability import MUC, MUC_ADMIN, MUC_OWNER, form, iq, join, ok
from test_offline import login, sync
from test_storage_failures import file_size_limit
from pgserver import backend, pg_cluster, pg_dsn  # noqa: F401 (fixtures: both storage backends)

ROOM = "kept@conference.localhost"
MUC_USER = MUC + "#user"


def persistent_room(server):
    owner = login(server, "owner")
    assert join(owner, "Boss", room=ROOM)[0] == "ok"
    ok(iq(owner, f"<query xmlns='{MUC_OWNER}'>" + form(
        {"muc#roomconfig_persistentroom": "1", "muc#roomconfig_changesubject": "1"},
        MUC + "#roomconfig") + "</query>", to=ROOM))
    sync(owner)       # past the config-change status message
    return owner


def collect(c, until):
    """Elements up to and including the first one for which ``until`` is true."""
    out = []
    while True:
        el = c.next()
        out.append(el)
        if until(el):
            return out


def describe(el):
    tag = el.tag[len(C):]
    if el.find(f"{C}subject") is not None:
        return f"subject:{el.find(f'{C}subject').text}"
    if el.find(f"{C}body") is not None:
        return f"body:{el.find(f'{C}body').text}"
    if tag == "iq":
        return f"iq:{el.get('id')}:{el.get('type')}"
    if el.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item") is not None:
        return f"{tag}:affiliation"
    return tag


def test_pipelined_requests_are_answered_in_order_after_the_commit(xmppd_server_factory, backend,
                                                                   tmp_path):
    xmppd_server = xmppd_server_factory(*backend.server_args(tmp_path / "d"), data_dir=tmp_path / "d")
    backend.check_used(xmppd_server)
    owner = persistent_room(xmppd_server)
    owner.send(f"<iq type='set' to='{ROOM}' id='aff'><query xmlns='{MUC_ADMIN}'>"
               f"<item jid='someone@localhost' affiliation='member'/></query></iq>"
               f"<message to='{ROOM}' type='groupchat' id='s'><subject>news</subject></message>"
               f"<message to='{ROOM}' type='groupchat' id='m'><body>after</body></message>")
    got = [describe(el) for el in collect(owner, lambda el: el.get("id") == "m")]
    # as without a database: the announcement, the IQ result, the subject, the message
    assert got == ["message:affiliation", "iq:aff:result", "subject:news", "body:after"], got


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
def test_subject_that_cannot_be_stored_is_not_broadcast(xmppd_server):
    owner = persistent_room(xmppd_server)
    other = login(xmppd_server, "other")
    assert join(other, "Other", room=ROOM)[0] == "ok"
    owner.send(f"<message to='{ROOM}' type='groupchat' id='s1'><subject>old</subject></message>")
    assert describe(collect(owner, lambda el: el.get("id") == "s1")[-1]) == "subject:old"
    with file_size_limit(xmppd_server):
        big = "x" * 20000
        owner.send(f"<message to='{ROOM}' type='groupchat' id='s2'><subject>{big}</subject></message>")
        el = collect(owner, lambda el: el.get("id") == "s2")[-1]
    assert el.get("type") == "error"
    assert stanza_error(el)[1] in ("internal-server-error", "resource-constraint")
    # the other occupant never saw it; a newcomer gets the old subject
    other.send(f"<message to='{ROOM}' type='groupchat' id='m'><body>hi</body></message>")
    seen = [describe(e) for e in collect(other, lambda el: el.get("id") == "m")]
    seen = [s for s in seen if s != "subject:None"]     # the empty subject on joining
    assert seen == ["subject:old", "body:hi"], seen
    third = login(xmppd_server, "third")
    third.send(f"<presence to='{ROOM}/Third'><x xmlns='{MUC}'/></presence>")
    subject = [e for e in collect(third, lambda el: el.find(f"{C}subject") is not None)][-1]
    assert subject.find(f"{C}subject").text == "old"
