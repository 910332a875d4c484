"""Scansion's stanza matching rules, on ``xml.etree`` elements with ``{namespace}name`` tags.

- Name and namespace must be equal (script elements without ``xmlns`` are ``jabber:client``).
- Non-strict elements (those in ``jabber:client``): every expected attribute must be present with
  the same value (extras ignored) and every expected child must match a distinct received child,
  in any order (extras ignored).
- Strict elements (any other namespace, declared or inherited, and everything inside such an
  element, even children written back in ``jabber:client``): exactly the same attributes, and
  the same children in the same order.
- ``scansion:strict='true'|'false'`` on an element overrides the default for that element.
- Text is compared, trimmed, only where the script gives non-blank text.
- ``{scansion:any}`` as a value matches anything present; ``{scansion:capture:NAME}`` records the
  value on first use and requires the same value afterwards.

Matching is tentative (a ``receives`` step tries it on many stanzas), so captures made while
matching are returned to the caller, which commits them only when the whole stanza matched.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Callable, Mapping

from xmppd.testing.script import CLIENT_NS, SCANSION_NS

STRICT_ATTR = f"{{{SCANSION_NS}}}strict"
ANY = "{scansion:any}"
_CAPTURE = re.compile(r"^\{scansion:capture:(?P<name>[^}]+)\}$")
_VARIABLE = re.compile(r"\$\{(?P<name>[^}]*?)'s (?P<kind>full JID|JID)\}")


class VariableError(Exception):
    """A ``${...}`` reference that cannot be resolved (unknown client, not connected yet)."""


def namespace(el: ET.Element) -> str:
    tag = el.tag
    if tag.startswith("{"):
        return tag[1:].split("}", 1)[0]
    return ""


def local_name(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def in_strict_namespace(expected: ET.Element, parent_in_strict_ns: bool = False) -> bool:
    """Default strictness: the element or one of its ancestors is outside ``jabber:client``."""
    return parent_in_strict_ns or namespace(expected) != CLIENT_NS


def is_strict(expected: ET.Element, parent_in_strict_ns: bool = False) -> bool:
    """``scansion:strict`` on the element itself wins; otherwise the namespace rule decides."""
    flag = expected.get(STRICT_ATTR)
    if flag is not None:
        return flag.strip().lower() in ("true", "1", "yes")
    return in_strict_namespace(expected, parent_in_strict_ns)


def _script_attrs(el: ET.Element) -> dict[str, str]:
    """The attributes the script asks for: everything except ``scansion:*`` directives."""
    return {k: v for k, v in el.attrib.items() if not k.startswith(f"{{{SCANSION_NS}}}")}


def substitute(el: ET.Element, resolve: Callable[[str, str], str]) -> ET.Element:
    """Return a copy of ``el`` with ``${Name's JID}`` / ``${Name's full JID}`` replaced.

    ``resolve(name, kind)`` returns the value (``kind`` is ``"JID"`` or ``"full JID"``).
    """

    def sub(text: str | None) -> str | None:
        if text is None or "${" not in text:
            return text
        return _VARIABLE.sub(lambda m: resolve(m.group("name"), m.group("kind")), text)

    def copy(src: ET.Element) -> ET.Element:
        dst = ET.Element(src.tag, {k: sub(v) for k, v in src.attrib.items()})
        dst.text = sub(src.text)
        dst.tail = sub(src.tail)
        for child in src:
            dst.append(copy(child))
        return dst

    return copy(el)


def _direct_text(el: ET.Element) -> str:
    parts = [el.text or ""]
    parts.extend(child.tail or "" for child in el)
    return "".join(parts).strip()


def _value_matches(expected: str, actual: str | None, captures: Mapping[str, str], new: dict[str, str]) -> bool:
    if actual is None:
        return False
    if expected == ANY:
        return True
    m = _CAPTURE.match(expected)
    if m:
        name = m.group("name")
        if name in new:
            return new[name] == actual
        if name in captures:
            return captures[name] == actual
        new[name] = actual
        return True
    return expected == actual


def match(
    expected: ET.Element,
    actual: ET.Element,
    captures: Mapping[str, str] | None = None,
) -> dict[str, str] | None:
    """Match one received element against one expected element.

    Returns the captures newly made (possibly empty) on success, or None on mismatch.
    """
    new: dict[str, str] = {}
    if _match(expected, actual, captures or {}, new):
        return new
    return None


def _match(expected: ET.Element, actual: ET.Element, captures: Mapping[str, str], new: dict[str, str],
           parent_ns_strict: bool = False) -> bool:
    if expected.tag != actual.tag:
        return False
    strict = is_strict(expected, parent_ns_strict)
    ns_strict = in_strict_namespace(expected, parent_ns_strict)
    want = _script_attrs(expected)
    if strict and set(want) != set(actual.attrib):
        return False
    for key, value in want.items():
        if not _value_matches(value, actual.get(key), captures, new):
            return False
    want_text = _direct_text(expected)
    if want_text and not _value_matches(want_text, _direct_text(actual), captures, new):
        return False
    want_children = list(expected)
    got_children = list(actual)
    if strict:
        if len(want_children) != len(got_children):
            return False
        return all(_match(w, g, captures, new, ns_strict) for w, g in zip(want_children, got_children))
    return _match_unordered(want_children, got_children, captures, new, ns_strict)


def _match_unordered(want: list[ET.Element], got: list[ET.Element], captures: Mapping[str, str],
                     new: dict[str, str], parent_ns_strict: bool) -> bool:
    """Each expected child must match a distinct received child (backtracking; lists are tiny)."""
    if not want:
        return True
    first, rest = want[0], want[1:]
    for idx, candidate in enumerate(got):
        trial = dict(new)
        if _match(first, candidate, captures, trial, parent_ns_strict):
            remaining = got[:idx] + got[idx + 1:]
            if _match_unordered(rest, remaining, captures, trial, parent_ns_strict):
                new.clear()
                new.update(trial)
                return True
    return False


def explain(expected: ET.Element, actual: ET.Element, captures: Mapping[str, str] | None = None, path: str = "",
            parent_ns_strict: bool = False) -> str:
    """A short human-readable reason why ``actual`` does not match ``expected`` (best effort)."""
    captures = captures or {}
    here = f"{path}/{local_name(expected)}"
    if expected.tag != actual.tag:
        return f"{here}: expected element {expected.tag}, got {actual.tag}"
    strict = is_strict(expected, parent_ns_strict)
    ns_strict = in_strict_namespace(expected, parent_ns_strict)
    want = _script_attrs(expected)
    new: dict[str, str] = {}
    for key, value in want.items():
        if not _value_matches(value, actual.get(key), captures, new):
            return f"{here}: attribute {key}={actual.get(key)!r}, expected {value!r}"
    if strict and set(want) != set(actual.attrib):
        extra = sorted(set(actual.attrib) - set(want))
        return f"{here} (strict): unexpected attributes {extra}"
    want_text = _direct_text(expected)
    if want_text and not _value_matches(want_text, _direct_text(actual), captures, new):
        return f"{here}: text {_direct_text(actual)!r}, expected {want_text!r}"
    want_children, got_children = list(expected), list(actual)

    def fits(w: ET.Element, g: ET.Element) -> bool:
        return _match(w, g, {**captures, **new}, {}, ns_strict)

    if strict:
        if len(want_children) != len(got_children):
            return (f"{here} (strict): {len(got_children)} children "
                    f"{[local_name(c) for c in got_children]}, expected {len(want_children)} "
                    f"{[local_name(c) for c in want_children]}")
        for w, g in zip(want_children, got_children):
            if not fits(w, g):
                return explain(w, g, {**captures, **new}, here, ns_strict)
        return f"{here}: captures are inconsistent"
    for w in want_children:
        candidates = [g for g in got_children if g.tag == w.tag]
        if not any(fits(w, g) for g in candidates):
            if len(candidates) == 1:
                return explain(w, candidates[0], {**captures, **new}, here, ns_strict)
            return f"{here}: no child matches expected {local_name(w)} ({w.tag})"
    return f"{here}: expected children cannot all be matched to distinct received children"


def to_xml(el: ET.Element, indent: str = "\t", level: int = 0, parent_ns: str = CLIENT_NS) -> str:
    """Serialize with ``xmlns`` written where the namespace changes (ElementTree's ``ns0:`` is unreadable)."""
    ns = namespace(el)
    name = local_name(el)
    attrs = []
    if ns != parent_ns:
        attrs.append(f"xmlns='{_escape_attr(ns)}'")
    for key, value in el.attrib.items():
        if key.startswith("{"):
            kns, kname = key[1:].split("}", 1)
            if kns == SCANSION_NS:
                key = f"scansion:{kname}"
            elif kns == "http://www.w3.org/XML/1998/namespace":
                key = f"xml:{kname}"
            else:
                key = f"{{{kns}}}{kname}"
        attrs.append(f"{key}='{_escape_attr(value)}'")
    pad = indent * level
    open_tag = f"<{name}{(' ' + ' '.join(attrs)) if attrs else ''}"
    text = (el.text or "").strip()
    children = list(el)
    if not children and not text:
        return f"{pad}{open_tag}/>"
    if not children:
        return f"{pad}{open_tag}>{_escape_text(text)}</{name}>"
    lines = [f"{pad}{open_tag}>"]
    if text:
        lines.append(f"{pad}{indent}{_escape_text(text)}")
    for child in children:
        lines.append(to_xml(child, indent, level + 1, ns))
        tail = (child.tail or "").strip()
        if tail:
            lines.append(f"{pad}{indent}{_escape_text(tail)}")
    lines.append(f"{pad}</{name}>")
    return "\n".join(lines)


def _escape_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(s: str) -> str:
    return _escape_text(s).replace("'", "&apos;")
