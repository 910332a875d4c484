"""The feature-module event registry: Prosody's ordering and stop rules, and feature loading."""
import xmppd  # noqa: F401  (compat shim before wokkel)
from xmppd.muc.features import FEATURES, load_features
from xmppd.muc.hooks import Event, Feature, Hooks


def test_handlers_run_by_descending_priority_then_registration_order():
    hooks, seen = Hooks(), []
    hooks.add("e", lambda ev: seen.append("low"), priority=-5)
    hooks.add("e", lambda ev: seen.append("first0"))
    hooks.add("e", lambda ev: seen.append("high"), priority=10)
    hooks.add("e", lambda ev: seen.append("second0"))
    assert hooks.fire("e", Event()) is None
    assert seen == ["high", "first0", "second0", "low"]


def test_first_non_none_result_stops_the_chain():
    hooks, seen = Hooks(), []
    hooks.add("e", lambda ev: seen.append(1), priority=3)
    hooks.add("e", lambda ev: False, priority=2)       # False is a result too (Prosody)
    hooks.add("e", lambda ev: seen.append(3), priority=1)
    assert hooks.fire("e", Event()) is False
    assert seen == [1]
    assert hooks.fire("nobody-listens", Event()) is None
    assert not hooks.has("nobody-listens") and hooks.has("e")


def test_feature_registers_its_handlers_and_defaults():
    f = Feature("demo", defaults={"demo": 1})

    @f.hook("muc-demo", priority=7)
    def _h(ev):
        ev.touched = True

    hooks = Hooks()
    f.register(hooks)
    ev = Event(room=None)
    hooks.fire("muc-demo", ev)
    assert ev.touched and f.defaults == {"demo": 1}


def test_every_listed_feature_module_loads_and_exports_a_feature():
    loaded = load_features()
    names = {f.name for f in loaded}
    assert {"lock", "members_only", "presence_broadcast", "register"} <= names
    assert len(loaded) <= len(FEATURES)
    for f in loaded:
        assert isinstance(f, Feature)
