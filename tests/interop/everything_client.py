#!/usr/bin/env python3
"""Exercise @modelcontextprotocol/server-everything through an MCP endpoint with the official Python SDK.

Usage:
    everything_client.py URL [--transport streamable-http|sse] [--mode legacy|auto]
                         --server LABEL=PREFIX [--server LABEL=PREFIX ...]

URL is a Streamable HTTP endpoint (http://host:port/mcp) or, with `--transport sse`, a legacy
HTTP+SSE endpoint (http://host:port/sse). Each `--server LABEL=PREFIX` names one copy of
server-everything reachable through URL whose tool and prompt names carry PREFIX (empty for a
server reached directly: `--server direct=`). The whole exercise runs once per copy, over a
single MCP session that declares the sampling, elicitation and roots capabilities (answered by
the callbacks below), so that server-everything registers the tools those capabilities gate.

Resource URIs are never hard-coded: a gateway may rewrite them when several copies of the
same server expose the same URIs, so they are taken from resources/list, resource templates
and tool results, and matched to a copy by name.

Prints one `PASS|FAIL [label] check: detail` line per check, then `N passed, M failed`, and
exits 1 if any check failed (2 on a usage error). Every check runs under a timeout.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import Client, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

# ping and logging/setLevel are deprecated in 2026-07-28 but are what a legacy session speaks.
warnings.simplefilter("ignore", MCPDeprecationWarning)

# Tools server-everything 2026.8.31 always registers.
BASE_TOOLS = (
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "gzip-file-as-resource",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-long-running-operation",
)
# Tools it registers after `initialized`, only when the client declared the capability named.
CAPABILITY_TOOLS = {
    "get-roots-list": "roots",
    "trigger-elicitation-request": "elicitation",
    "trigger-url-elicitation": "elicitation.url",
    "trigger-sampling-request": "sampling",
    "simulate-research-query": "(none; registered after initialized)",
}
# Registered only for clients that declare tasks.requests.*, which this client does not.
TASK_TOOLS = ("trigger-sampling-request-async", "trigger-elicitation-request-async")
PROMPTS = ("simple-prompt", "args-prompt", "completable-prompt", "resource-prompt")
STATIC_DOC = "instructions.md"  # one of the static documents it lists as resources
TEXT_TEMPLATE = "Dynamic Text Resource"
BLOB_TEMPLATE = "Dynamic Blob Resource"

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


def texts(content: Sequence[Any]) -> list[str]:
    return [block.text for block in content if isinstance(block, types.TextContent)]


def all_text(content: Sequence[Any]) -> str:
    return "\n".join(texts(content))


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


def tool_ok(result: types.CallToolResult, name: str) -> types.CallToolResult:
    expect(not result.is_error, f"{name} returned isError: {short(all_text(result.content))}")
    return result


@dataclass
class Events:
    """What the server sent this client, recorded by the callbacks."""

    nonce: str
    roots_uri: str
    sampling: list[types.CreateMessageRequestParams] = field(default_factory=list)
    elicitation: list[Any] = field(default_factory=list)
    roots_requests: int = 0
    logs: list[tuple[float, types.LoggingMessageNotificationParams]] = field(default_factory=list)
    notifications: dict[str, int] = field(default_factory=dict)
    transport_errors: list[str] = field(default_factory=list)

    # --- callbacks (signatures as mcp 2.x's ClientSession expects them) ---

    async def on_sampling(
        self, context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.sampling.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled-by-toolgate-interop-{self.nonce}-{len(self.sampling)}"),
            model="toolgate-interop-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        self.elicitation.append(params)
        if isinstance(params, types.ElicitRequestURLParams):
            return types.ElicitResult(action="accept")
        return types.ElicitResult(
            action="accept",
            content={
                "name": f"Toolgate Tester {self.nonce}",
                "check": True,
                "email": "tester@example.com",
                "integer": 7,
                "number": 2.5,
            },
        )

    async def on_list_roots(self, context: Any) -> types.ListRootsResult:
        self.roots_requests += 1
        return types.ListRootsResult(roots=[types.Root(uri=self.roots_uri, name="toolgate-interop")])

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append((time.monotonic(), params))

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.transport_errors.append(f"{type(message).__name__}: {message}")
            return
        method = getattr(message, "method", type(message).__name__)
        self.notifications[method] = self.notifications.get(method, 0) + 1


class Report:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.passed = 0
        self.failed: list[str] = []

    async def check(self, label: str, name: str, body: Callable[[], Awaitable[str]]) -> bool:
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


async def list_all(fetch: Callable[[str | None], Awaitable[Any]], items: str) -> tuple[list[Any], int]:
    """Follow next_cursor until it is absent; return every item and the page count."""
    collected: list[Any] = []
    cursor: str | None = None
    seen: set[str] = set()
    pages = 0
    while True:
        page = await fetch(cursor)
        pages += 1
        collected.extend(getattr(page, items))
        cursor = page.next_cursor
        if not cursor:
            return collected, pages
        expect(cursor not in seen, f"{items} pagination repeated cursor {cursor!r} on page {pages}")
        expect(pages < MAX_PAGES, f"{items} pagination still going after {MAX_PAGES} pages")
        seen.add(cursor)


class Listings:
    """Session-wide listings, fetched once (every copy of the server shares one session)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.tools: list[types.Tool] | None = None
        self.tool_pages = 0
        self.resources: list[types.Resource] | None = None
        self.resource_pages = 0
        self.templates: list[types.ResourceTemplate] | None = None
        self.template_pages = 0
        self.prompts: list[types.Prompt] | None = None
        self.prompt_pages = 0

    async def list_tools(self) -> list[types.Tool]:
        self.tools, self.tool_pages = await list_all(lambda c: self.client.list_tools(cursor=c), "tools")
        return self.tools

    async def list_resources(self) -> list[types.Resource]:
        if self.resources is None:
            self.resources, self.resource_pages = await list_all(
                lambda c: self.client.list_resources(cursor=c), "resources"
            )
        return self.resources

    async def list_templates(self) -> list[types.ResourceTemplate]:
        if self.templates is None:
            self.templates, self.template_pages = await list_all(
                lambda c: self.client.list_resource_templates(cursor=c), "resource_templates"
            )
        return self.templates

    async def list_prompts(self) -> list[types.Prompt]:
        if self.prompts is None:
            self.prompts, self.prompt_pages = await list_all(lambda c: self.client.list_prompts(cursor=c), "prompts")
        return self.prompts


def pick_by_name(items: Sequence[Any], base: str, prefix: str, index: int, copies: int) -> Any:
    """The item standing for `base` on the copy with `prefix`, the `index`-th of `copies`.

    A gateway may prefix resource names like tool names, or leave them alone; then every copy
    lists an item with the same name, and the copies are told apart by listing order.
    """
    for candidates in (
        [i for i in items if i.name == prefix + base],
        [i for i in items if i.name == base],
        [i for i in items if i.name.endswith(base)],
    ):
        if candidates:
            return candidates[index] if len(candidates) == copies else candidates[0]
    names = sorted({i.name for i in items})
    raise CheckFailed(f"nothing named {prefix + base!r} or {base!r} among {len(items)}: {short(names, 500)}")


def expand(template: str, **values: str) -> str:
    uri = template
    for key, value in values.items():
        expect("{" + key + "}" in uri, f"template {template!r} has no {{{key}}}")
        uri = uri.replace("{" + key + "}", value)
    expect("{" not in uri, f"template {template!r} has variables besides {sorted(values)}")
    return uri


def one_content(result: types.ReadResourceResult, uri: str) -> Any:
    expect(len(result.contents) == 1, f"read {uri} gave {len(result.contents)} contents, expected 1")
    content = result.contents[0]
    expect(content.uri == uri, f"read {uri} answered for another uri {content.uri!r}")
    return content


class ServerExercise:
    """Every check against one copy of server-everything (tool/prompt names prefixed)."""

    def __init__(
        self,
        client: Client,
        report: Report,
        events: Events,
        listings: Listings,
        label: str,
        prefix: str,
        index: int,
        copies: int,
    ) -> None:
        self.client = client
        self.report = report
        self.events = events
        self.listings = listings
        self.label = label
        self.prefix = prefix
        self.index = index
        self.copies = copies
        self.text_template: types.ResourceTemplate | None = None
        self.blob_template: types.ResourceTemplate | None = None

    def name(self, base: str) -> str:
        return self.prefix + base

    async def call(self, base: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> types.CallToolResult:
        return await self.client.call_tool(self.name(base), arguments, **kwargs)

    async def run(self) -> None:
        c = self.report.check
        label = self.label
        if not await c(label, "tools/list", self.tools_list):
            print(f"  (skipping the tool checks for [{label}]: its tools are not listed)")
        else:
            await c(label, "echo", self.echo)
            await c(label, "get-sum", self.get_sum)
            await c(label, "get-structured-content", self.structured_content)
            await c(label, "get-tiny-image", self.tiny_image)
            await c(label, "get-annotated-message", self.annotated_message)
            await c(label, "tool error: invalid arguments", self.invalid_arguments)
            await c(label, "tool error: unknown tool", self.unknown_tool)
            await c(label, "progress (trigger-long-running-operation)", self.progress)
            await c(label, "sampling (trigger-sampling-request)", self.sampling)
            await c(label, "elicitation form (trigger-elicitation-request)", self.elicitation)
            await c(label, "elicitation url (trigger-url-elicitation)", self.url_elicitation)
            await c(label, "roots (get-roots-list)", self.roots)
            await c(label, "logging (toggle-simulated-logging)", self.simulated_logging)
        await c(label, "resources/list + read text", self.resources_read_text)
        await c(label, "resources/templates/list", self.resource_templates)
        await c(label, "read blob via template", self.read_blob_template)
        await c(label, "read text via template", self.read_text_template)
        if self.listings.tools is not None:
            await c(label, "embedded resource (get-resource-reference)", self.resource_reference)
            await c(label, "resource links (get-resource-links) + read", self.resource_links)
            await c(label, "session resource (gzip-file-as-resource) + read", self.gzip_resource)
        await c(label, "prompts/list", self.prompts_list)
        await c(label, "prompts/get simple-prompt", self.prompt_simple)
        await c(label, "prompts/get args-prompt", self.prompt_args)
        await c(label, "prompts/get resource-prompt", self.prompt_resource)
        await c(label, "completion/complete prompt argument", self.complete_prompt)
        await c(label, "completion/complete prompt argument with context", self.complete_prompt_context)
        await c(label, "completion/complete resource template argument", self.complete_template)

    # --- tools ---

    async def tools_list(self) -> str:
        expected = set(BASE_TOOLS) | set(CAPABILITY_TOOLS)
        # The capability-gated tools appear once the server has seen `initialized`; give a
        # gateway that opens its upstream sessions lazily a moment to catch up.
        deadline = time.monotonic() + 5
        while True:
            tools = await self.listings.list_tools()
            names = [t.name for t in tools]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            expect(not duplicates, f"tools/list names tools more than once: {duplicates}")
            mine = {n[len(self.prefix) :]: t for n, t in zip(names, tools) if n.startswith(self.prefix)}
            missing = sorted(expected - set(mine))
            if not missing or time.monotonic() > deadline:
                break
            await anyio.sleep(0.25)
        # A hint when only the capability-gated tools are missing.
        gated = {n: CAPABILITY_TOOLS[n] for n in missing if n in CAPABILITY_TOOLS} if set(BASE_TOOLS) <= set(mine) else {}
        expect(
            not missing,
            f"missing {missing} with prefix {self.prefix!r}"
            + (f" (gated on client capabilities {gated}: were they passed upstream?)" if gated else "")
            + f"; listed {len(names)} tools: {short(sorted(names), 600)}",
        )
        echo = mine["echo"]
        props = (echo.input_schema or {}).get("properties", {})
        expect("message" in props, f"echo's inputSchema lost its 'message' property: {short(echo.input_schema)}")
        extra = sorted(set(mine) - expected - set(TASK_TOOLS))
        return (
            f"{len(mine)} tools with prefix {self.prefix!r} ({len(names)} in all, {self.listings.tool_pages} page(s))"
            + (f"; also {extra}" if extra else "")
        )

    async def echo(self) -> str:
        message = f"hello toolgate {self.label} {self.events.nonce}"
        result = tool_ok(await self.call("echo", {"message": message}), "echo")
        got = all_text(result.content)
        expect(got == f"Echo: {message}", f"expected 'Echo: {message}', saw {short(got)}")
        return short(got)

    async def get_sum(self) -> str:
        result = tool_ok(await self.call("get-sum", {"a": 19, "b": 23.5}), "get-sum")
        got = all_text(result.content)
        expect("is 42.5" in got, f"expected the sum 42.5, saw {short(got)}")
        return short(got)

    async def structured_content(self) -> str:
        result = tool_ok(await self.call("get-structured-content", {"location": "Chicago"}), "get-structured-content")
        sc = result.structured_content
        expect(
            sc == {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82},
            f"unexpected structuredContent {short(sc)}",
        )
        return f"structuredContent {sc}"

    async def tiny_image(self) -> str:
        result = tool_ok(await self.call("get-tiny-image", {}), "get-tiny-image")
        images = [b for b in result.content if isinstance(b, types.ImageContent)]
        expect(len(images) == 1, f"expected one image block, saw {[b.type for b in result.content]}")
        expect(images[0].mime_type == "image/png", f"image mimeType {images[0].mime_type!r}")
        raw = base64.b64decode(images[0].data)
        expect(raw.startswith(b"\x89PNG\r\n\x1a\n"), f"image data is not a PNG: {raw[:16]!r}")
        return f"{len(raw)}-byte PNG among {len(result.content)} blocks"

    async def annotated_message(self) -> str:
        result = tool_ok(
            await self.call("get-annotated-message", {"messageType": "error", "includeImage": True}),
            "get-annotated-message",
        )
        expect(len(result.content) == 2, f"expected text+image, saw {[b.type for b in result.content]}")
        first = result.content[0]
        ann = first.annotations
        expect(
            ann is not None and ann.priority == 1.0 and list(ann.audience or []) == ["user", "assistant"],
            f"annotations lost on the text block: {short(ann)}",
        )
        return f"annotations priority={ann.priority} audience={ann.audience}"

    async def invalid_arguments(self) -> str:
        try:
            result = await self.call("echo", {})
        except MCPError as e:
            return f"MCP error {e.code}: {short(e.message, 120)}"
        expect(result.is_error, f"echo without 'message' succeeded: {short(all_text(result.content))}")
        return f"isError result: {short(all_text(result.content), 120)}"

    async def unknown_tool(self) -> str:
        try:
            result = await self.call("no-such-tool-" + self.events.nonce, {})
        except MCPError as e:
            return f"MCP error {e.code}: {short(e.message, 120)}"
        expect(result.is_error, f"an unknown tool succeeded: {short(all_text(result.content))}")
        return f"isError result: {short(all_text(result.content), 120)}"

    async def progress(self) -> str:
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        result = tool_ok(
            await self.call(
                "trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=on_progress
            ),
            "trigger-long-running-operation",
        )
        got = all_text(result.content)
        expect("Long running operation completed" in got, f"unexpected result {short(got)}")
        expect(seen, "no notifications/progress arrived for the call")
        values = [p for p, _, _ in seen]
        expect(values == sorted(values) and len(set(values)) == len(values), f"progress not increasing: {values}")
        expect(all(t == 4 for _, t, _ in seen), f"progress total should be 4: {seen}")
        expect(len(seen) == 4 and values[-1] == 4, f"expected progress 1..4 of 4, saw {values}")
        return f"progress {values} of 4"

    async def sampling(self) -> str:
        prompt = f"toolgate sampling {self.label} {self.events.nonce}"
        before = len(self.events.sampling)
        result = tool_ok(
            await self.call("trigger-sampling-request", {"prompt": prompt, "maxTokens": 32}),
            "trigger-sampling-request",
        )
        expect(len(self.events.sampling) == before + 1, f"sampling callback ran {len(self.events.sampling) - before} times, expected once")
        params = self.events.sampling[-1]
        asked = " ".join(b.text for m in params.messages for b in m.content_as_list if isinstance(b, types.TextContent))
        expect(prompt in asked, f"the sampling request did not carry the prompt: {short(asked)}")
        expect(params.max_tokens == 32, f"maxTokens {params.max_tokens}, expected 32")
        answer = f"sampled-by-toolgate-interop-{self.events.nonce}-{len(self.events.sampling)}"
        got = all_text(result.content)
        expect(answer in got, f"the tool result lacks the callback's answer {answer!r}: {short(got)}")
        return f"callback answer came back in the tool result ({short(asked, 80)})"

    async def elicitation(self) -> str:
        before = len(self.events.elicitation)
        result = tool_ok(await self.call("trigger-elicitation-request", {}), "trigger-elicitation-request")
        expect(len(self.events.elicitation) == before + 1, "the elicitation callback did not run exactly once")
        params = self.events.elicitation[-1]
        expect(isinstance(params, types.ElicitRequestFormParams), f"expected a form elicitation, got {short(params)}")
        props = params.requested_schema.get("properties", {}) if isinstance(params.requested_schema, dict) else params.requested_schema.properties
        expect("name" in props, f"requestedSchema lacks 'name': {short(params.requested_schema)}")
        got = all_text(result.content)
        for line in (f"- Name: Toolgate Tester {self.events.nonce}", "- Agreed to terms: true", "- Favorite Integer: 7"):
            expect(line in got, f"the tool result lacks {line!r}: {short(got)}")
        return "form answered and echoed back"

    async def url_elicitation(self) -> str:
        url = f"https://example.com/toolgate-interop/{self.events.nonce}/{self.label}"
        before = len(self.events.elicitation)
        result = tool_ok(
            await self.call("trigger-url-elicitation", {"url": url, "elicitationId": f"tg-{self.events.nonce}"}),
            "trigger-url-elicitation",
        )
        expect(len(self.events.elicitation) == before + 1, "the elicitation callback did not run exactly once")
        params = self.events.elicitation[-1]
        expect(isinstance(params, types.ElicitRequestURLParams), f"expected a url elicitation, got {short(params)}")
        expect(params.url == url, f"elicitation url {params.url!r}, expected {url!r}")
        got = all_text(result.content)
        expect("User completed the URL elicitation flow" in got and url in got, f"unexpected result {short(got)}")
        return f"url elicitation accepted (id {params.elicitation_id})"

    async def roots(self) -> str:
        result = tool_ok(await self.call("get-roots-list", {}), "get-roots-list")
        got = all_text(result.content)
        expect(self.events.roots_uri in got, f"the roots callback's root {self.events.roots_uri} is not in {short(got)}")
        return f"server saw root {self.events.roots_uri} (roots/list answered {self.events.roots_requests} time(s) so far)"

    async def simulated_logging(self) -> str:
        start = time.monotonic()
        on = tool_ok(await self.call("toggle-simulated-logging", {}), "toggle-simulated-logging")
        stopped = "Stopped" in all_text(on.content)
        if stopped:  # it was already on for this session: turn it on again
            on = tool_ok(await self.call("toggle-simulated-logging", {}), "toggle-simulated-logging")
        expect("Started" in all_text(on.content), f"unexpected toggle result {short(all_text(on.content))}")
        try:
            # It sends one randomly-leveled message at once, then one every 5 s.
            with anyio.move_on_after(min(8.0, self.report.timeout / 2)):
                while not self._simulated_logs_since(start):
                    await anyio.sleep(0.05)
        finally:
            off = await self.call("toggle-simulated-logging", {})
        expect("Stopped" in all_text(off.content), f"toggling off said {short(all_text(off.content))}")
        logs = self._simulated_logs_since(start)
        expect(logs, "no notifications/message from the simulated logger arrived (logging/setLevel was debug)")
        level, data = logs[0].level, logs[0].data
        return f"{len(logs)} log message(s), first {level}: {short(data, 80)}"

    def _simulated_logs_since(self, start: float) -> list[types.LoggingMessageNotificationParams]:
        return [
            p
            for t, p in self.events.logs
            if t >= start and isinstance(p.data, str) and ("-level message" in p.data or "level-message" in p.data)
        ]

    # --- resources ---

    async def resources_read_text(self) -> str:
        resources = await self.listings.list_resources()
        expect(resources, "resources/list is empty")
        uris = [r.uri for r in resources]
        duplicates = sorted({u for u in uris if uris.count(u) > 1})
        expect(not duplicates, f"resources/list names URIs more than once: {short(duplicates)}")
        doc = pick_by_name(resources, STATIC_DOC, self.prefix, self.index, self.copies)
        content = one_content(await self.client.read_resource(doc.uri), doc.uri)
        expect(isinstance(content, types.TextResourceContents), f"{doc.uri} is not text: {short(content)}")
        expect(content.mime_type == "text/markdown", f"{doc.uri} mimeType {content.mime_type!r}")
        expect(len(content.text) > 20, f"{doc.uri} text is too short: {short(content.text)}")
        return (
            f"{len(resources)} resources in {self.listings.resource_pages} page(s); "
            f"read {doc.name!r} at {doc.uri} ({len(content.text)} chars)"
        )

    async def resource_templates(self) -> str:
        templates = await self.listings.list_templates()
        self.text_template = pick_by_name(templates, TEXT_TEMPLATE, self.prefix, self.index, self.copies)
        self.blob_template = pick_by_name(templates, BLOB_TEMPLATE, self.prefix, self.index, self.copies)
        for t in (self.text_template, self.blob_template):
            expect("{resourceId}" in t.uri_template, f"template {t.name!r} lacks {{resourceId}}: {t.uri_template}")
        return (
            f"{len(templates)} templates in {self.listings.template_pages} page(s); "
            f"text {self.text_template.uri_template}, blob {self.blob_template.uri_template}"
        )

    async def read_blob_template(self) -> str:
        expect(self.blob_template is not None, "not run: resources/templates/list failed")
        uri = expand(self.blob_template.uri_template, resourceId="7")
        content = one_content(await self.client.read_resource(uri), uri)
        expect(isinstance(content, types.BlobResourceContents), f"{uri} is not a blob: {short(content)}")
        decoded = base64.b64decode(content.blob).decode()
        expect(decoded.startswith("Resource 7: This is a base64 blob"), f"unexpected blob {short(decoded)}")
        return f"{uri}: {short(decoded, 80)}"

    async def read_text_template(self) -> str:
        expect(self.text_template is not None, "not run: resources/templates/list failed")
        uri = expand(self.text_template.uri_template, resourceId="3")
        content = one_content(await self.client.read_resource(uri), uri)
        expect(isinstance(content, types.TextResourceContents), f"{uri} is not text: {short(content)}")
        expect(content.text.startswith("Resource 3: This is a plaintext resource"), f"unexpected text {short(content.text)}")
        return f"{uri}: {short(content.text, 80)}"

    async def resource_reference(self) -> str:
        result = tool_ok(
            await self.call("get-resource-reference", {"resourceType": "Blob", "resourceId": 5}),
            "get-resource-reference",
        )
        embedded = [b for b in result.content if isinstance(b, types.EmbeddedResource)]
        expect(len(embedded) == 1, f"expected one embedded resource, saw {[b.type for b in result.content]}")
        res = embedded[0].resource
        expect(isinstance(res, types.BlobResourceContents), f"embedded resource is not a blob: {short(res)}")
        decoded = base64.b64decode(res.blob).decode()
        expect(decoded.startswith("Resource 5:"), f"unexpected blob {short(decoded)}")
        content = one_content(await self.client.read_resource(res.uri), res.uri)
        expect(isinstance(content, types.BlobResourceContents), f"re-reading {res.uri} gave {short(content)}")
        return f"embedded {res.uri}, readable"

    async def resource_links(self) -> str:
        result = tool_ok(await self.call("get-resource-links", {"count": 2}), "get-resource-links")
        links = [b for b in result.content if isinstance(b, types.ResourceLink)]
        expect(len(links) == 2, f"expected 2 resource links, saw {[b.type for b in result.content]}")
        read = []
        for link in links:
            content = one_content(await self.client.read_resource(link.uri), link.uri)
            body = content.text if isinstance(content, types.TextResourceContents) else base64.b64decode(content.blob).decode()
            expect(body.startswith("Resource "), f"{link.uri} read as {short(body)}")
            read.append(link.uri)
        return f"read {read}"

    async def gzip_resource(self) -> str:
        payload = f"toolgate interop {self.label} {self.events.nonce}\n" * 20
        data_uri = "data:text/plain;base64," + base64.b64encode(payload.encode()).decode()
        name = f"toolgate-{self.label}-{self.events.nonce}.txt.gz"
        result = tool_ok(
            await self.call("gzip-file-as-resource", {"name": name, "data": data_uri, "outputType": "resourceLink"}),
            "gzip-file-as-resource",
        )
        links = [b for b in result.content if isinstance(b, types.ResourceLink)]
        expect(len(links) == 1, f"expected one resource link, saw {short(result.content)}")
        uri = links[0].uri
        content = one_content(await self.client.read_resource(uri), uri)
        expect(isinstance(content, types.BlobResourceContents), f"{uri} is not a blob: {short(content)}")
        unzipped = gzip.decompress(base64.b64decode(content.blob)).decode()
        expect(unzipped == payload, f"{uri} did not gunzip to what was sent: {short(unzipped)}")
        return f"{uri} holds the {len(payload)}-byte payload gzipped"

    # --- prompts ---

    async def prompts_list(self) -> str:
        prompts = await self.listings.list_prompts()
        names = [p.name for p in prompts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        expect(not duplicates, f"prompts/list names prompts more than once: {duplicates}")
        missing = [p for p in PROMPTS if self.name(p) not in names]
        expect(not missing, f"missing prompts {missing} with prefix {self.prefix!r}; listed {short(names, 600)}")
        args = {a.name: a.required for a in next(p for p in prompts if p.name == self.name("args-prompt")).arguments or []}
        expect(args.get("city") is True and not args.get("state"), f"args-prompt arguments {args}")
        return f"{len(PROMPTS)} prompts with prefix {self.prefix!r} ({len(names)} in all, {self.listings.prompt_pages} page(s))"

    async def prompt_simple(self) -> str:
        result = await self.client.get_prompt(self.name("simple-prompt"))
        got = all_text([m.content for m in result.messages])
        expect(got == "This is a simple prompt without arguments.", f"unexpected messages {short(got)}")
        return short(got)

    async def prompt_args(self) -> str:
        state = f"State-{self.events.nonce}"
        result = await self.client.get_prompt(self.name("args-prompt"), {"city": "Lisbon", "state": state})
        got = all_text([m.content for m in result.messages])
        expect(got == f"What's weather in Lisbon, {state}?", f"unexpected messages {short(got)}")
        return short(got)

    async def prompt_resource(self) -> str:
        result = await self.client.get_prompt(self.name("resource-prompt"), {"resourceType": "Text", "resourceId": "4"})
        expect(len(result.messages) == 2, f"expected 2 messages, saw {len(result.messages)}")
        block = result.messages[1].content
        expect(isinstance(block, types.EmbeddedResource), f"second message is not an embedded resource: {short(block)}")
        expect(
            isinstance(block.resource, types.TextResourceContents) and block.resource.text.startswith("Resource 4:"),
            f"unexpected embedded resource {short(block.resource)}",
        )
        return f"embedded {block.resource.uri}"

    # --- completion ---

    async def complete_prompt(self) -> str:
        ref = types.PromptReference(name=self.name("completable-prompt"))
        result = await self.client.complete(ref, {"name": "department", "value": "Eng"})
        expect(result.completion.values == ["Engineering"], f"completion values {result.completion.values}")
        return f"department 'Eng' -> {result.completion.values}"

    async def complete_prompt_context(self) -> str:
        ref = types.PromptReference(name=self.name("completable-prompt"))
        result = await self.client.complete(ref, {"name": "name", "value": ""}, context_arguments={"department": "Sales"})
        expect(result.completion.values == ["David", "Eve", "Frank"], f"completion values {result.completion.values}")
        return f"name '' with department=Sales -> {result.completion.values}"

    async def complete_template(self) -> str:
        expect(self.text_template is not None, "not run: resources/templates/list failed")
        ref = types.ResourceTemplateReference(uri=self.text_template.uri_template)
        result = await self.client.complete(ref, {"name": "resourceId", "value": "12"})
        expect(result.completion.values == ["12"], f"completion values {result.completion.values}")
        return f"{self.text_template.uri_template} resourceId '12' -> {result.completion.values}"


async def session_checks(client: Client, report: Report) -> None:
    async def initialize() -> str:
        caps = client.server_capabilities
        missing = [c for c in ("tools", "prompts", "resources", "logging", "completions") if getattr(caps, c, None) is None]
        info = client.server_info
        expect(not missing, f"server capabilities lack {missing}: {short(caps.model_dump(exclude_none=True))}")
        return f"protocol {client.protocol_version}, server {info.name if info else None} {info.version if info else ''}"

    async def ping() -> str:
        result = await client.session.send_ping()
        expect(isinstance(result, types.EmptyResult), f"ping answered {short(result)}")
        return "pong"

    async def set_level() -> str:
        await client.set_logging_level("debug")
        return "level debug accepted"

    await report.check("session", "initialize", initialize)
    await report.check("session", "ping", ping)
    await report.check("session", "logging/setLevel", set_level)


def parse_servers(specs: Sequence[str]) -> list[tuple[str, str]]:
    servers = []
    for spec in specs:
        label, sep, prefix = spec.partition("=")
        if not sep or not label:
            raise SystemExit(f"--server expects LABEL=PREFIX (PREFIX may be empty), got {spec!r}")
        servers.append((label, prefix))
    labels = [label for label, _ in servers]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"--server labels must differ: {labels}")
    return servers


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="MCP endpoint: http://host:port/mcp, or http://host:port/sse with --transport sse")
    parser.add_argument("--transport", choices=("streamable-http", "sse"), default="streamable-http")
    parser.add_argument("--mode", choices=("legacy", "auto"), default="legacy", help="legacy: initialize handshake (default)")
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="LABEL=PREFIX",
        help="a copy of server-everything behind URL and the prefix of its tool and prompt names (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed for each check (default 30)")
    parser.add_argument("--total-timeout", type=float, default=600.0, help="seconds allowed for the whole run (default 600)")
    args = parser.parse_args(argv)
    servers = parse_servers(args.server)

    nonce = uuid.uuid4().hex[:10]
    events = Events(nonce=nonce, roots_uri=f"file:///tmp/toolgate-interop-{nonce}")
    report = Report(args.timeout)
    transport = (
        sse_client(args.url, timeout=args.timeout, sse_read_timeout=args.total_timeout)
        if args.transport == "sse"
        else streamable_http_client(args.url)
    )
    client = Client(
        transport,
        mode=args.mode,
        read_timeout_seconds=args.timeout,
        sampling_callback=events.on_sampling,
        elicitation_callback=events.on_elicitation,
        list_roots_callback=events.on_list_roots,
        logging_callback=events.on_log,
        message_handler=events.on_message,
        client_info=types.Implementation(name="toolgate-interop-everything-client", version="1"),
        cache=None,
    )
    print(f"connecting to {args.url} ({args.transport}, {args.mode}); servers: {servers}", flush=True)
    connected = False
    try:
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + args.timeout  # to connect and initialize
            async with client:
                connected = True
                scope.deadline = anyio.current_time() + args.total_timeout
                await session_checks(client, report)
                listings = Listings(client)
                for index, (label, prefix) in enumerate(servers):
                    await ServerExercise(client, report, events, listings, label, prefix, index, len(servers)).run()

                async def roots_requested() -> str:
                    expect(events.roots_requests > 0, "no roots/list request reached the roots callback")
                    return f"roots/list answered {events.roots_requests} time(s)"

                await report.check("session", "roots/list requested by the server(s)", roots_requested)
        if scope.cancelled_caught:
            report.fail(
                "session",
                "run" if connected else "connect",
                f"not finished within --total-timeout {args.total_timeout:g}s"
                if connected
                else f"no initialized session within --timeout {args.timeout:g}s",
            )
    except Exception as e:  # noqa: BLE001 - a connection that cannot be made fails the run
        report.fail("session", "connection", describe(e))

    if events.notifications:
        print(f"notifications seen: {dict(sorted(events.notifications.items()))}")
    if events.transport_errors:
        print(f"transport errors seen: {events.transport_errors[:5]}")
    print(f"everything_client: {report.passed} passed, {len(report.failed)} failed", flush=True)
    if report.failed:
        print("failed checks:", file=sys.stderr)
        for line in report.failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
