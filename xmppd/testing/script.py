"""Parser for scansion scripts (``.scs``), Prosody's text format for scripted XMPP conversations.

A script is a header of ``[Client] Name`` sections with indented ``key: value`` properties, a line
of dashes, then steps (``Name connects``, ``Name sends:`` + indented XML, ``Name receives:`` +
indented XML, ``Name receives: nothing``, ``Name disconnects``). Stanza blocks are parsed here (so
syntax errors are reported with their line before anything connects); variables such as
``${Romeo's full JID}`` stay in the parsed tree and are substituted when the step runs, because
full JIDs are only known after binding.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

CLIENT_NS = "jabber:client"
SCANSION_NS = "https://matthewwild.co.uk/projects/scansion"

_COMMENT_PREFIXES = ("#", "//", "--")
_SEPARATOR = re.compile(r"^-{3,}\s*$")
_CLIENT_HEADER = re.compile(r"^\[Client\]\s+(?P<name>\S.*?)\s*$")
_PROPERTY = re.compile(r"^\s+(?P<key>[\w-]+)\s*:\s*(?P<value>.*?)\s*$")
_ACTION = re.compile(
    r"^(?P<name>\S.*?)\s+(?P<verb>connects|disconnects|sends|receives)\s*(?P<colon>:)?\s*(?P<rest>.*?)\s*$"
)


class ScriptError(Exception):
    """A script that cannot be parsed; carries the file and line so the author can fix it."""

    def __init__(self, message: str, path: str = "<script>", line: int = 0):
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


@dataclass
class ClientSpec:
    name: str
    line: int
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def jid(self) -> str | None:
        return self.properties.get("jid")

    @property
    def password(self) -> str:
        return self.properties.get("password", "")


@dataclass
class Step:
    """One action. ``stanzas`` holds parsed elements for sends/receives (empty for the others)."""

    client: str
    action: str  # "connects" | "disconnects" | "sends" | "receives" | "receives-nothing"
    line: int
    stanzas: list[ET.Element] = field(default_factory=list)
    source: str = ""  # the indented XML exactly as written, for reports


@dataclass
class Script:
    path: str
    title: str
    clients: dict[str, ClientSpec]
    steps: list[Step]


def _is_comment(stripped: str) -> bool:
    return stripped.startswith(_COMMENT_PREFIXES)


def parse_fragment(xml_text: str, path: str = "<script>", line: int = 0) -> list[ET.Element]:
    """Parse one or more stanzas written in a script.

    They are wrapped in an element declaring the default namespace ``jabber:client`` and the
    ``scansion:`` prefix, so scripts may use both without declaring them.
    """
    wrapped = (
        f"<scansion-root xmlns='{CLIENT_NS}' xmlns:scansion='{SCANSION_NS}'>"
        f"{xml_text}</scansion-root>"
    )
    try:
        root = ET.fromstring(wrapped)
    except ET.ParseError as e:
        # The error position is relative to the wrapped text; map the row back to the script.
        row = e.position[0] if getattr(e, "position", None) else 1
        raise ScriptError(f"invalid XML in stanza block: {e}", path, line + row - 1) from None
    elements = list(root)
    if not elements:
        raise ScriptError("empty stanza block", path, line)
    if (root.text or "").strip() or any((el.tail or "").strip() for el in elements):
        raise ScriptError("text outside of a stanza in stanza block", path, line)
    for el in elements:
        el.tail = None
    return elements


def parse(text: str, path: str = "<script>") -> Script:
    """Parse the text of a ``.scs`` file into a :class:`Script`; raises :class:`ScriptError`."""
    lines = text.splitlines()
    title = ""
    clients: dict[str, ClientSpec] = {}
    steps: list[Step] = []
    i = 0
    n = len(lines)
    current: ClientSpec | None = None

    # Header: title comment, [Client] sections, up to the separator line.
    in_header = True
    while i < n and in_header:
        raw = lines[i]
        stripped = raw.strip()
        lineno = i + 1
        i += 1
        if not stripped:
            continue
        if _SEPARATOR.match(stripped):
            in_header = False
            break
        if stripped.startswith("#"):
            if not title and not clients:
                title = stripped.lstrip("#").strip()
            continue
        if _is_comment(stripped):
            continue
        m = _CLIENT_HEADER.match(stripped)
        if m:
            name = m.group("name")
            if name in clients:
                raise ScriptError(f"client {name!r} declared twice", path, lineno)
            current = clients[name] = ClientSpec(name, lineno)
            continue
        m = _PROPERTY.match(raw)
        if m and current is not None:
            current.properties[m.group("key")] = m.group("value")
            continue
        raise ScriptError(f"unexpected line in header: {stripped!r}", path, lineno)
    if in_header:
        raise ScriptError("missing '-----' line after the client declarations", path, n)
    if not clients:
        raise ScriptError("no [Client] declared", path, 1)

    # Body: actions, each possibly followed by an indented stanza block.
    while i < n:
        raw = lines[i]
        stripped = raw.strip()
        lineno = i + 1
        i += 1
        if not stripped or _is_comment(stripped):
            continue
        if raw[:1].isspace():
            raise ScriptError(f"indented line outside of a stanza block: {stripped!r}", path, lineno)
        m = _ACTION.match(stripped)
        if not m:
            raise ScriptError(f"cannot understand step: {stripped!r}", path, lineno)
        name, verb, colon, rest = m.group("name", "verb", "colon", "rest")
        if name not in clients:
            raise ScriptError(f"unknown client {name!r}", path, lineno)
        if verb in ("connects", "disconnects"):
            if colon or rest:
                raise ScriptError(f"unexpected text after {verb!r}", path, lineno)
            steps.append(Step(name, verb, lineno))
            continue
        if not colon:
            raise ScriptError(f"expected ':' after {verb!r}", path, lineno)
        if verb == "receives" and rest == "nothing":
            steps.append(Step(name, "receives-nothing", lineno))
            continue
        if rest:
            raise ScriptError(f"unexpected text after '{verb}:': {rest!r}", path, lineno)
        # Collect the indented block (blank lines inside it are kept; comments are not allowed
        # inside XML, so '#' lines there are part of the XML and will fail to parse loudly).
        block_start = i + 1
        block: list[str] = []
        while i < n and (not lines[i].strip() or lines[i][:1].isspace()):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        if not block:
            raise ScriptError(f"'{verb}:' without an indented stanza", path, lineno)
        source = "\n".join(block)
        stanzas = parse_fragment(source, path, block_start)
        steps.append(Step(name, verb, lineno, stanzas, source))
    return Script(path, title, clients, steps)


def load(path: str | Path) -> Script:
    p = Path(path)
    return parse(p.read_text(encoding="utf-8"), str(p))
