#!/usr/bin/env python3
"""Exercise the client-side features of MCP servers in either protocol era, with the official Python SDK.

Usage:
    eras_client.py URL --mode legacy|modern|auto
                   --server LABEL=PREFIX [--kind python|everything] [--server LABEL=PREFIX [--kind ...] ...]
                   [--skip CHECK ...] [--timeout 30] [--total-timeout 300]

URL is a Streamable HTTP endpoint (http://host:port/mcp). One client connects to it:
- `--mode legacy`: the `initialize` handshake (a 2025-11-25 session); the servers ask for
  elicitation, sampling and roots with server-to-client requests in the middle of a call;
- `--mode modern`: 2026-07-28, no handshake (`Client(mode="2026-07-28")`); the servers ask through
  MRTR: an `InputRequiredResult` the SDK answers from the same callbacks and retries;
- `--mode auto`: the SDK probes `server/discover` and falls back to `initialize`.

Each `--server LABEL=PREFIX` names one server reachable through URL whose tool names carry PREFIX
(empty when talking to the server directly: `--server direct=`). The `--kind` after it says
which tools to expect (default: python, or the --kind given before the first --server):
- `python`: tests/interop/modern_server.py: echo, report_progress, ask_name, ask_llm,
  list_roots, ask_everything, the resource `modern://greeting` and the prompt `greet`;
- `everything`: @modelcontextprotocol/server-everything (legacy era only; behind a gateway in
  modern mode): echo, trigger-elicitation-request, trigger-sampling-request,
  trigger-long-running-operation, get-roots-list.

Checks per server: tools/list, echo, elicitation (the callback's answer must show in the tool
result), sampling (likewise), progress (every notifications/progress arrives, increasing, with
the right total), roots; for python servers also all three inputs in one call, a resource read
and a prompt. Prints `PASS|FAIL [label] check: detail` per check (`SKIP [label] check` for one
named by --skip), then `eras_client: N passed, M failed[, K skipped]`, and exits 1 if any check failed (2 on a usage error). Every
check runs under --timeout seconds and the whole run under --total-timeout.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import Client, types
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

# Sampling and roots are deprecated from 2026-07-28 on (SEP-2577), but still served.
warnings.simplefilter("ignore", MCPDeprecationWarning)

MODES = {"legacy": "legacy", "modern": "2026-07-28", "auto": "auto"}
KINDS = ("python", "everything")

# The tools each kind of server must list.
EXPECTED_TOOLS = {
    "python": ("echo", "report_progress", "ask_name", "ask_llm", "list_roots", "ask_everything"),
    # server-everything registers the last four only once it has seen `initialized` from a
    # client that declared elicitation, sampling and roots.
    "everything": (
        "echo",
        "trigger-long-running-operation",
        "trigger-elicitation-request",
        "trigger-sampling-request",
        "get-roots-list",
    ),
}
MAX_PAGES = 200


class CheckFailed(Exception):
    """A check saw something other than what it expects."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "…"


def all_text(content: Sequence[Any]) -> str:
    return "\n".join(block.text for block in content if isinstance(block, types.TextContent))


def describe(e: BaseException) -> str:
    """One line for an exception, looking inside exception groups (task groups wrap transport errors)."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in e.exceptions)
    if isinstance(e, MCPError):
        message = e.message if e.message.startswith("MCP error") else f"MCP error {e.code}: {e.message}"
        return short(message) + (f" data={short(e.data)}" if e.data is not None else "")
    text = str(e) or repr(e)
    cause = e.__cause__ or e.__context__
    if cause is not None and not str(e):
        text += f" (from {describe(cause)})"
    return f"{type(e).__name__}: {short(text)}"


def tool_ok(result: types.CallToolResult, name: str) -> str:
    text = all_text(result.content)
    expect(not result.is_error, f"{name} returned isError: {short(text)}")
    return text


@dataclass
class Events:
    """What the servers asked of this client, recorded by the callbacks."""

    nonce: str
    sampling: list[types.CreateMessageRequestParams] = field(default_factory=list)
    elicitation: list[Any] = field(default_factory=list)
    roots_requests: int = 0

    @property
    def user_name(self) -> str:
        return f"Eras Tester {self.nonce}"

    @property
    def root_uri(self) -> str:
        return f"file:///tmp/toolgate-eras-{self.nonce}"

    def sampled(self, n: int) -> str:
        return f"sampled-by-eras-client-{self.nonce}-{n}"

    # --- callbacks (signatures as mcp 2.x's ClientSession expects them; in modern mode the SDK
    # calls the same ones for each input request of an InputRequiredResult) ---

    async def on_sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampling.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=self.sampled(len(self.sampling))),
            model="eras-client-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        self.elicitation.append(params)
        if isinstance(params, types.ElicitRequestURLParams):
            return types.ElicitResult(action="accept")
        # Fields for every form these servers send (server-everything's asks for more than a name).
        return types.ElicitResult(
            action="accept",
            content={
                "name": self.user_name,
                "check": True,
                "email": "eras@example.com",
                "integer": 7,
                "number": 2.5,
            },
        )

    async def on_list_roots(self, context: Any) -> types.ListRootsResult:
        self.roots_requests += 1
        return types.ListRootsResult(roots=[types.Root(uri=self.root_uri, name="eras-client")])


class Report:
    def __init__(self, timeout: float, skip: Sequence[str] = ()) -> None:
        self.timeout = timeout
        self.skip = set(skip)
        self.passed = 0
        self.skipped = 0
        self.failed: list[str] = []

    async def check(self, label: str, name: str, body: Callable[[], Awaitable[str]]) -> bool:
        if name in self.skip or f"{label}:{name}" in self.skip:
            self.skipped += 1
            print(f"SKIP [{label}] {name}", flush=True)
            return True
        try:
            with anyio.fail_after(self.timeout):
                detail = await body()
        except CheckFailed as e:
            return self.fail(label, name, str(e))
        except TimeoutError:
            return self.fail(label, name, f"no answer within {self.timeout:g}s")
        except Exception as e:  # noqa: BLE001 - any other failure is this check's failure
            return self.fail(label, name, describe(e))
        self.passed += 1
        print(f"PASS [{label}] {name}: {detail}", flush=True)
        return True

    def fail(self, label: str, name: str, message: str) -> bool:
        line = f"FAIL [{label}] {name}: {message}"
        self.failed.append(line)
        print(line, flush=True)
        return False


async def list_all(fetch: Callable[[str | None], Awaitable[Any]], items: str) -> list[Any]:
    """Follow next_cursor to the end."""
    collected: list[Any] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        page = await fetch(cursor)
        collected.extend(getattr(page, items))
        cursor = page.next_cursor
        if not cursor:
            return collected
        expect(cursor not in seen, f"{items} pagination repeated cursor {cursor!r}")
        seen.add(cursor)
    raise CheckFailed(f"{items} pagination still going after {MAX_PAGES} pages")


@dataclass
class ServerSpec:
    label: str
    prefix: str
    kind: str


class ServerExercise:
    """Every check against one server (tool and prompt names prefixed)."""

    def __init__(self, client: Client, report: Report, events: Events, spec: ServerSpec) -> None:
        self.client = client
        self.report = report
        self.events = events
        self.spec = spec

    def name(self, base: str) -> str:
        return self.spec.prefix + base

    async def call(self, base: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> types.CallToolResult:
        return await self.client.call_tool(self.name(base), arguments, **kwargs)

    async def run(self) -> None:
        c = self.report.check
        label = self.spec.label
        if not await c(label, "tools/list", self.tools_list):
            print(f"  (skipping the tool checks for [{label}]: its tools are not listed)", flush=True)
        else:
            await c(label, "echo", self.echo)
            await c(label, "elicitation", self.elicitation)
            await c(label, "sampling", self.sampling)
            await c(label, "progress", self.progress)
            await c(label, "roots", self.roots)
            if self.spec.kind == "python":
                await c(label, "elicitation + sampling + roots in one call", self.all_inputs)
        if self.spec.kind == "python":
            await c(label, "resources/read modern://greeting", self.resource)
            await c(label, "prompts/get greet", self.prompt)

    async def tools_list(self) -> str:
        expected = EXPECTED_TOOLS[self.spec.kind]
        # server-everything adds its capability-gated tools once it has seen `initialized`; give a
        # gateway that opens its upstream sessions lazily a moment to catch up.
        deadline = time.monotonic() + 5
        while True:
            tools = await list_all(lambda cursor: self.client.list_tools(cursor=cursor), "tools")
            names = [t.name for t in tools]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            expect(not duplicates, f"tools/list names tools more than once: {duplicates}")
            missing = [base for base in expected if self.name(base) not in names]
            if not missing or time.monotonic() > deadline:
                break
            await anyio.sleep(0.25)
        expect(
            not missing,
            f"missing {missing} with prefix {self.spec.prefix!r}; listed {len(names)}: {short(sorted(names), 600)}",
        )
        return f"{len(expected)} expected tools listed (of {len(names)})"

    async def echo(self) -> str:
        message = f"eras {self.spec.label} {self.events.nonce}"
        got = tool_ok(await self.call("echo", {"message": message}), "echo")
        expect(got == f"Echo: {message}", f"echo gave {short(got)}")
        return got

    async def elicitation(self) -> str:
        before = len(self.events.elicitation)
        if self.spec.kind == "python":
            got = tool_ok(await self.call("ask_name", {}), "ask_name")
            wanted = [f"Hello, {self.events.user_name}!"]
        else:
            got = tool_ok(await self.call("trigger-elicitation-request", {}), "trigger-elicitation-request")
            wanted = [f"- Name: {self.events.user_name}", "- Favorite Integer: 7"]
        asked = len(self.events.elicitation) - before
        expect(asked == 1, f"the elicitation callback ran {asked} times, expected once")
        params = self.events.elicitation[-1]
        expect(isinstance(params, types.ElicitRequestFormParams), f"expected a form elicitation, got {short(params)}")
        schema = params.requested_schema
        props = schema.get("properties", {}) if isinstance(schema, dict) else schema.properties
        expect("name" in props, f"requestedSchema lacks 'name': {short(schema)}")
        for line in wanted:
            expect(line in got, f"the tool result lacks the callback's answer {line!r}: {short(got)}")
        return f"form answered and echoed back ({short(params.message, 60)})"

    async def sampling(self) -> str:
        question = f"eras sampling {self.spec.label} {self.events.nonce}"
        before = len(self.events.sampling)
        if self.spec.kind == "python":
            got = tool_ok(await self.call("ask_llm", {"question": question}), "ask_llm")
            max_tokens = 100
        else:
            arguments = {"prompt": question, "maxTokens": 32}
            got = tool_ok(await self.call("trigger-sampling-request", arguments), "trigger-sampling-request")
            max_tokens = 32
        asked = len(self.events.sampling) - before
        expect(asked == 1, f"the sampling callback ran {asked} times, expected once")
        params = self.events.sampling[-1]
        text = " ".join(
            b.text for m in params.messages for b in m.content_as_list if isinstance(b, types.TextContent)
        )
        expect(question in text, f"the sampling request did not carry the question: {short(text)}")
        expect(params.max_tokens == max_tokens, f"maxTokens {params.max_tokens}, expected {max_tokens}")
        answer = self.events.sampled(len(self.events.sampling))
        expect(answer in got, f"the tool result lacks the callback's answer {answer!r}: {short(got)}")
        return "callback answer came back in the tool result"

    async def progress(self) -> str:
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        if self.spec.kind == "python":
            steps = 3
            result = await self.call("report_progress", {"steps": steps}, progress_callback=on_progress)
            got = tool_ok(result, "report_progress")
            expect(got == f"Reported {steps} steps", f"unexpected result {short(got)}")
        else:
            steps = 4
            result = await self.call(
                "trigger-long-running-operation", {"duration": 1, "steps": steps}, progress_callback=on_progress
            )
            got = tool_ok(result, "trigger-long-running-operation")
            expect("Long running operation completed" in got, f"unexpected result {short(got)}")
        values = [p for p, _, _ in seen]
        expect(seen, "no notifications/progress arrived for the call")
        expect(all(t == steps for _, t, _ in seen), f"progress total should be {steps}: {seen}")
        expect(values == [float(i) for i in range(1, steps + 1)], f"expected progress 1..{steps}, saw {values}")
        return f"progress {values} of {steps}"

    async def roots(self) -> str:
        before = self.events.roots_requests
        if self.spec.kind == "python":
            got = tool_ok(await self.call("list_roots", {}), "list_roots")
            expect(self.events.roots_requests > before, "the roots callback did not run for the call")
        else:
            # server-everything asks for the roots once, ~350 ms after `initialized`, and reports
            # what it got then: the callback need not run during this call.
            got = tool_ok(await self.call("get-roots-list", {}), "get-roots-list")
        expect(self.events.root_uri in got, f"the roots callback's root {self.events.root_uri} is not in {short(got)}")
        return f"server saw root {self.events.root_uri} (roots/list answered {self.events.roots_requests} time(s))"

    async def all_inputs(self) -> str:
        before = (len(self.events.elicitation), len(self.events.sampling), self.events.roots_requests)
        got = tool_ok(await self.call("ask_everything", {}), "ask_everything")
        after = (len(self.events.elicitation), len(self.events.sampling), self.events.roots_requests)
        expect(
            [a - b for a, b in zip(after, before)] == [1, 1, 1],
            f"callbacks ran (elicitation, sampling, roots) {[a - b for a, b in zip(after, before)]} times, expected once each",
        )
        for part in (f"Hello, {self.events.user_name}!", self.events.sampled(after[1]), self.events.root_uri):
            expect(part in got, f"the tool result lacks {part!r}: {short(got)}")
        return "all three answers came back in one tool result"

    async def resource(self) -> str:
        resources = await list_all(lambda cursor: self.client.list_resources(cursor=cursor), "resources")
        # A gateway may prefix resource names, or rewrite URIs; find it by name, as listed.
        candidates = [r for r in resources if r.name in (self.name("greeting"), "greeting")]
        expect(candidates, f"no resource named greeting: {short(sorted(r.name for r in resources))}")
        uri = str(candidates[0].uri)
        result = await self.client.read_resource(uri)
        expect(len(result.contents) == 1, f"read {uri} gave {len(result.contents)} contents")
        content = result.contents[0]
        expect(isinstance(content, types.TextResourceContents), f"not text: {short(content)}")
        expect(content.text == "Hello from modern_server.py", f"unexpected text {short(content.text)}")
        return f"{uri} read"

    async def prompt(self) -> str:
        result = await self.client.get_prompt(self.name("greet"), {"name": self.events.nonce})
        text = " ".join(
            m.content.text for m in result.messages if isinstance(m.content, types.TextContent)
        )
        expect(text == f"Please greet {self.events.nonce}.", f"unexpected prompt text {short(text)}")
        return "argument substituted"


class ServerAction(argparse.Action):
    """`--server LABEL=PREFIX`: a new server, of the kind given last (default python)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        label, sep, prefix = str(value).partition("=")
        if not sep or not label:
            parser.error(f"--server expects LABEL=PREFIX (PREFIX may be empty), got {value!r}")
        servers = list(getattr(namespace, "servers", None) or [])
        if any(s.label == label for s in servers):
            parser.error(f"--server labels must differ: {label!r} twice")
        servers.append(ServerSpec(label, prefix, namespace.default_kind))
        namespace.servers = servers


class KindAction(argparse.Action):
    """`--kind K`: the kind of the server named just before it; before any --server, the default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        servers = getattr(namespace, "servers", None) or []
        if servers:
            servers[-1].kind = value
        else:
            namespace.default_kind = value


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="Streamable HTTP endpoint: http://host:port/mcp")
    parser.add_argument("--mode", choices=sorted(MODES), required=True, help="protocol era of this client")
    parser.add_argument("--server", action=ServerAction, metavar="LABEL=PREFIX", help="a server behind URL (repeatable)")
    parser.add_argument("--kind", action=KindAction, choices=KINDS, help="kind of the preceding --server")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="CHECK",
        help="skip this check (its name as printed, e.g. roots, or LABEL:CHECK for one server; repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed for each check (default 30)")
    parser.add_argument("--total-timeout", type=float, default=300.0, help="seconds for the whole run (default 300)")
    parser.set_defaults(servers=[], default_kind="python")
    args = parser.parse_args(argv)
    if not args.servers:
        parser.error("name at least one --server LABEL=PREFIX")

    nonce = uuid.uuid4().hex[:10]
    events = Events(nonce=nonce)
    report = Report(args.timeout, args.skip)
    client = Client(
        args.url,
        mode=MODES[args.mode],
        read_timeout_seconds=args.timeout,
        sampling_callback=events.on_sampling,
        elicitation_callback=events.on_elicitation,
        list_roots_callback=events.on_list_roots,
        client_info=types.Implementation(name="toolgate-interop-eras-client", version="1"),
        cache=None,  # every listing goes to the wire
    )
    servers = ", ".join(f"{s.label}={s.prefix!r} ({s.kind})" for s in args.servers)
    print(f"connecting to {args.url} (mode {args.mode}); servers: {servers}", flush=True)
    connected = False
    try:
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + args.timeout  # to connect (and initialize)
            async with client:
                connected = True
                scope.deadline = anyio.current_time() + args.total_timeout

                async def era() -> str:
                    version = client.protocol_version
                    if args.mode == "legacy":
                        expect(version in HANDSHAKE_PROTOCOL_VERSIONS, f"legacy mode negotiated {version!r}")
                    elif args.mode == "modern":
                        expect(version == "2026-07-28", f"modern mode speaks {version!r}")
                    server = client.server_info
                    return f"protocol {version}; server {server.name if server else '(anonymous)'}"

                await report.check("session", "connect", era)
                for spec in args.servers:
                    await ServerExercise(client, report, events, spec).run()
        if scope.cancelled_caught:
            report.fail(
                "session",
                "run" if connected else "connect",
                f"not finished within --total-timeout {args.total_timeout:g}s"
                if connected
                else f"not connected within --timeout {args.timeout:g}s",
            )
    except Exception as e:  # noqa: BLE001 - a connection that cannot be made fails the run
        report.fail("session", "connection", describe(e))

    skipped = f", {report.skipped} skipped" if report.skipped else ""
    print(f"eras_client: {report.passed} passed, {len(report.failed)} failed{skipped}", flush=True)
    if report.failed:
        print("failed checks:", file=sys.stderr)
        for line in report.failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
