"""MUC service component (stub until the MUC lands: answers service-unavailable)."""
from wokkel import component, generic


def make_component(router, cfg, store):
    comp = component.InternalComponent(router, cfg.muc_domain)
    generic.FallbackHandler().setHandlerParent(comp)
    return comp
