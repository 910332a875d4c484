"""The personal-data store (PEP nodes/items/subscriptions, vCards, private XML) on both backends:
limits inside the transaction, nothing half-written, ordering, account deletion."""
import pytest

from pgserver import backend, pg_cluster, pg_dsn  # noqa: F401 (fixtures)
from xmppd.config import Config
from xmppd.storage import delete_account_data
from xmppd.storage.accounts import AccountStore
from xmppd.storage.personal import LimitExceeded, PersonalStore


@pytest.fixture
def store(backend, tmp_path):
    d = backend.open(tmp_path)
    yield PersonalStore(d, Config())
    d.close()


def cfg(max_items=2):
    return {"access_model": "open", "max_items": max_items}


def test_nodes_items_order_trim_and_limits(store):
    assert store.publish("alice", "n1", "a", "alice@localhost", "<a/>", cfg(), 2) == (cfg(), True)
    store.publish("alice", "n1", "b", "alice@localhost", "<b/>", cfg(), 2)
    store.publish("alice", "n1", "c", "alice@localhost", "<c/>", cfg(), 2)      # trims 'a'
    assert [r[0] for r in store.items("alice", "n1")] == ["b", "c"]
    store.publish("alice", "n1", "b", "alice@localhost", "<b2/>", cfg(), 2)     # republish: newest
    assert store.items("alice", "n1") == [("c", "alice@localhost", "<c/>"), ("b", "alice@localhost", "<b2/>")]
    assert store.items("alice", "n1", max_items=1) == [("b", "alice@localhost", "<b2/>")]
    assert [r[0] for r in store.items("alice", "n1", ids=["c", "zz"])] == ["c"]
    store.publish("alice", "n2", "x", "alice@localhost", "<x/>", cfg(), 2)
    with pytest.raises(LimitExceeded):
        store.publish("alice", "n3", "x", "alice@localhost", "<x/>", cfg(), 2)
    assert store.node_config("alice", "n3") is None and set(store.nodes("alice")) == {"n1", "n2"}

    def refuse(config):
        raise ValueError("precondition")
    with pytest.raises(ValueError):
        store.publish("alice", "n1", "d", "alice@localhost", "<d/>", cfg(), 2, check=refuse)
    assert [r[0] for r in store.items("alice", "n1")] == ["c", "b"]             # rolled back
    assert store.configure("alice", "n1", cfg(1)) and [r[0] for r in store.items("alice", "n1")] == ["b"]
    assert store.retract("alice", "n1", "b") and not store.retract("alice", "n1", "b")


def test_subscriptions_vcard_private_and_deletion(store, backend, tmp_path):
    store.publish("alice", "n", "1", "alice@localhost", "<p/>", cfg(), 5)
    store.subscribe("alice", "n", "bob@localhost", 1)
    store.subscribe("alice", "n", "bob@localhost", 1)                            # idempotent
    with pytest.raises(LimitExceeded):
        store.subscribe("alice", "n", "carol@localhost", 1)
    assert store.subscriptions_of("bob@localhost") == [("alice", "n")]
    store.publish("bob", "m", "1", "bob@localhost", "<p/>", cfg(), 5)
    store.subscribe("bob", "m", "alice@localhost/phone", 5)
    store.set_vcard("alice", "<vCard xmlns='vcard-temp'/>")
    store.set_vcard("alice", "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>")
    assert store.get_vcard("alice") == "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>"
    store.set_private("alice", {"urn:a": "<a xmlns='urn:a'>é</a>"}, 100)
    with pytest.raises(LimitExceeded):
        store.set_private("alice", {"urn:b": "<b xmlns='urn:b'>" + "x" * 80 + "</b>"}, 100)
    assert store.get_private("alice", "urn:b") is None                           # nothing half-written
    assert store.get_private("alice", "urn:a") == "<a xmlns='urn:a'>é</a>"
    assert store.delete_node("alice", "n") == ["bob@localhost"] and store.delete_node("alice", "n") is None
    store.publish("alice", "n", "1", "alice@localhost", "<p/>", cfg(), 5)
    AccountStore(store.db, Config()).create("alice", "pw")
    delete_account_data(store.db, Config(), "alice")
    assert store.nodes("alice") == {} and store.get_vcard("alice") is None
    assert store.get_private("alice", "urn:a") is None
    assert store.subscribers("bob", "m") == []       # alice's own subscriptions elsewhere went too
    assert set(store.nodes("bob")) == {"m"}
