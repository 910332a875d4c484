"""Run a parsed scansion script against a server and report the first mismatch.

Steps run in order; every client keeps reading concurrently into its own queue. A ``receives``
step takes stanzas from that client's queue, passing over those that do not match, until one
matches or ``timeout`` seconds pass. ``receives: nothing`` fails if anything is queued or arrives
within ``nothing_wait`` seconds.
"""
from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from xmppd.testing import matcher
from xmppd.testing.client import Client, ClientError, StreamClosed
from xmppd.testing.script import Script, ScriptError, Step, load

DEFAULT_TIMEOUT = 5.0
DEFAULT_NOTHING_WAIT = 0.5


@dataclass
class Failure:
    path: str
    line: int
    client: str
    message: str
    expected: str = ""
    received: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def report(self) -> str:
        out = [f"FAIL {self.path}:{self.line}: {self.client}: {self.message}"]
        if self.expected:
            out.append("  expected:")
            out.extend("    " + line for line in self.expected.splitlines())
        if self.received:
            out.append(f"  received instead ({len(self.received)} stanza(s)):")
            for xml, why in zip(self.received, self.reasons):
                out.extend("    " + line for line in xml.splitlines())
                if why:
                    out.append(f"      ^ {why}")
        elif self.expected:
            out.append("  received instead: nothing")
        return "\n".join(out)


@dataclass
class Result:
    path: str
    title: str
    steps_total: int
    steps_run: int = 0
    failure: Failure | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


class _StepFailed(Exception):
    def __init__(self, failure: Failure):
        self.failure = failure


class ScriptRunner:
    def __init__(
        self,
        script: Script,
        host: str = "127.0.0.1",
        port: int = 5222,
        timeout: float = DEFAULT_TIMEOUT,
        nothing_wait: float = DEFAULT_NOTHING_WAIT,
        log: Callable[[str], None] | None = None,
    ):
        self.script = script
        self.host = host
        self.port = port
        self.timeout = timeout
        self.nothing_wait = nothing_wait
        self.log = log
        self.clients: dict[str, Client] = {}
        self.captures: dict[str, str] = {}

    def _fail(self, step: Step, message: str, **kw) -> _StepFailed:
        return _StepFailed(Failure(self.script.path, step.line, step.client, message, **kw))

    def _resolve(self, name: str, kind: str) -> str:
        spec = self.script.clients.get(name)
        if spec is None:
            raise matcher.VariableError(f"unknown client {name!r} in ${{{name}'s {kind}}}")
        client = self.clients.get(name)
        if kind == "full JID":
            if client is None or client.full_jid is None:
                raise matcher.VariableError(f"${{{name}'s full JID}} used before {name} connected")
            return client.full_jid
        if client is not None and client.full_jid:
            return client.full_jid.split("/", 1)[0]
        if not spec.jid:
            raise matcher.VariableError(f"${{{name}'s JID}}: {name} has no jid")
        return spec.jid.split("/", 1)[0]

    def _expand(self, step: Step, el: ET.Element) -> ET.Element:
        try:
            return matcher.substitute(el, self._resolve)
        except matcher.VariableError as e:
            raise self._fail(step, str(e)) from None

    def _client(self, step: Step) -> Client:
        client = self.clients.get(step.client)
        if client is None:
            raise self._fail(step, f"{step.client} has not connected")
        return client

    async def run(self) -> Result:
        result = Result(self.script.path, self.script.title, len(self.script.steps))
        started = time.monotonic()
        try:
            for step in self.script.steps:
                await self._run_step(step)
                result.steps_run += 1
        except _StepFailed as e:
            result.failure = e.failure
        finally:
            for client in self.clients.values():
                await client.abort()
            result.duration = time.monotonic() - started
        return result

    async def _run_step(self, step: Step) -> None:
        if self.log:
            self.log(f"--- line {step.line}: {step.client} {step.action}")
        if step.action == "connects":
            await self._connect(step)
        elif step.action == "disconnects":
            await self._client(step).disconnect()
        elif step.action == "sends":
            client = self._client(step)
            for el in step.stanzas:
                try:
                    client.send(self._expand(step, el))
                except ClientError as e:
                    raise self._fail(step, str(e)) from None
        elif step.action == "receives":
            client = self._client(step)
            for el in step.stanzas:
                await self._receive(step, client, self._expand(step, el))
        elif step.action == "receives-nothing":
            await self._receive_nothing(step, self._client(step))
        else:  # pragma: no cover - the parser produces only the actions above
            raise self._fail(step, f"unknown action {step.action}")

    async def _connect(self, step: Step) -> None:
        spec = self.script.clients[step.client]
        if not spec.jid:
            raise self._fail(step, f"{step.client} has no jid")
        old = self.clients.get(step.client)
        if old is not None and old.connected:
            raise self._fail(step, f"{step.client} is already connected")
        client = Client(step.client, spec.jid, spec.password, self.host, self.port, self.timeout, self.log)
        self.clients[step.client] = client
        try:
            await client.connect()
        except ClientError as e:
            raise self._fail(step, f"connect failed: {e}") from None

    async def _receive(self, step: Step, client: Client, expected: ET.Element) -> None:
        deadline = time.monotonic() + self.timeout
        seen: list[ET.Element] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                got = await client.next_stanza(max(remaining, 0.0)) if remaining > 0 else None
            except StreamClosed as e:
                raise self._mismatch(step, expected, seen, f"stream closed before a match ({e})") from None
            if got is None:
                raise self._mismatch(step, expected, seen, f"no matching stanza within {self.timeout:g}s")
            new = matcher.match(expected, got, self.captures)
            if new is not None:
                self.captures.update(new)
                return
            seen.append(got)

    def _mismatch(self, step: Step, expected: ET.Element, seen: list[ET.Element], message: str) -> _StepFailed:
        return self._fail(
            step,
            message,
            expected=matcher.to_xml(expected),
            received=[matcher.to_xml(g) for g in seen],
            reasons=[matcher.explain(expected, g, self.captures) for g in seen],
        )

    async def _receive_nothing(self, step: Step, client: Client) -> None:
        got = client.drain()
        if not got:
            try:
                one = await client.next_stanza(self.nothing_wait)
            except StreamClosed:
                one = None  # a closed stream delivers nothing
            if one is not None:
                got = [one] + client.drain()
        if got:
            raise self._fail(
                step,
                "expected to receive nothing",
                received=[matcher.to_xml(g) for g in got],
                reasons=["" for _ in got],
            )


async def run_script(script: Script, host: str = "127.0.0.1", port: int = 5222, timeout: float = DEFAULT_TIMEOUT,
                     nothing_wait: float = DEFAULT_NOTHING_WAIT, log: Callable[[str], None] | None = None) -> Result:
    return await ScriptRunner(script, host, port, timeout, nothing_wait, log).run()


def run_file(path: str | Path, host: str = "127.0.0.1", port: int = 5222, timeout: float = DEFAULT_TIMEOUT,
             nothing_wait: float = DEFAULT_NOTHING_WAIT, log: Callable[[str], None] | None = None) -> Result:
    """Parse and run one file in a fresh event loop (a parse error is reported as a failure)."""
    try:
        script = load(path)
    except ScriptError as e:
        r = Result(str(path), "", 0)
        r.failure = Failure(e.path, e.line, "-", f"script error: {e}")
        return r
    except OSError as e:
        r = Result(str(path), "", 0)
        r.failure = Failure(str(path), 0, "-", f"cannot read script: {e}")
        return r
    return asyncio.run(run_script(script, host, port, timeout, nothing_wait, log))
