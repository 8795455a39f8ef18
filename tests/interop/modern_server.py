#!/usr/bin/env python3
"""A small MCP server built on the official Python SDK (`mcp` 2.x) that speaks both protocol eras.

Usage:
    modern_server.py PORT [--host 127.0.0.1] [--modern-only] [--name NAME]

Serves Streamable HTTP at http://HOST:PORT/mcp and prints `listening on http://HOST:PORT/mcp`
as its first stdout line (PORT 0 picks a free port). The SDK serves both eras on that one
endpoint: a legacy client (`initialize`, 2025-11-25 and earlier) gets a session in which the
tools below ask the client with real `elicitation/create`, `sampling/createMessage` and
`roots/list` requests mid-call; a 2026-07-28 client sends self-contained requests and the same
tools answer with `InputRequiredResult` (MRTR) rounds instead.

`--modern-only` turns the legacy era away, as a server that speaks only 2026-07-28 would: any
request that is not a 2026-07-28 one (no `MCP-Protocol-Version` header naming a modern
version) gets HTTP 400 with an `UnsupportedProtocolVersionError` (-32022) that names the
supported versions, as the 2026-07-28 spec recommends for `initialize`. The SDK has no switch for
this, so it is a thin ASGI filter in front of the SDK's app.

What it offers:
    tools      echo(message)             -> "Echo: <message>"
               report_progress(steps=3)  -> progress 1..steps of total steps, then "Reported N steps"
               ask_name()                -> elicitation (form with `name`)     -> "Hello, <name>!"
               ask_llm(question)         -> sampling (the question, 100 tok.)  -> "LLM said: <text>"
               list_roots()              -> roots/list                         -> "Roots: <uri> (<name>), ..."
               ask_everything()          -> all three in one call (one MRTR round on 2026-07-28)
               announce_changes()        -> publishes tools/prompts list changes and an update of
                                            modern://greeting to subscriptions/listen streams
    resource   modern://greeting         (text/plain)
    prompt     greet(name)               -> one user message "Please greet <name>."

Logs go to stderr. Stop it with SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Annotated, Any

import anyio
import uvicorn
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    ListRoots,
    MCPServer,
    Resolve,
    Sample,
)
from mcp.types import CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

GREETING_URI = "modern://greeting"


class Name(BaseModel):
    name: str = Field(description="Your name")


# --- resolvers: what a tool needs from the client, asked in the request's era ------------------


async def name_of_user() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


async def llm_answer(question: str) -> Sample:
    return Sample(
        [SamplingMessage(role="user", content=TextContent(type="text", text=question))],
        max_tokens=100,
    )


async def everything_llm() -> Sample:
    return Sample(
        [SamplingMessage(role="user", content=TextContent(type="text", text="Say something nice"))],
        max_tokens=50,
    )


async def client_roots() -> ListRoots:
    return ListRoots()


def sampled_text(result: CreateMessageResult) -> str:
    content = result.content
    blocks = content if isinstance(content, list) else [content]
    return " ".join(b.text for b in blocks if isinstance(b, TextContent)) or "(no text)"


def roots_text(result: ListRootsResult) -> str:
    return ", ".join(f"{root.uri} ({root.name})" if root.name else str(root.uri) for root in result.roots)


def greeting_for(person: ElicitationResult[Name]) -> str:
    if isinstance(person, AcceptedElicitation):
        return f"Hello, {person.data.name}!"
    return f"No name given (the user chose {person.action})"


def build_server(name: str) -> MCPServer:
    mcp = MCPServer(
        name=name,
        version="1.0.0",
        instructions="Interop test server for toolgate: serves the legacy era and 2026-07-28.",
        log_level="WARNING",
    )

    @mcp.tool(description="Returns `Echo: <message>`")
    async def echo(message: str) -> str:
        return f"Echo: {message}"

    @mcp.tool(description="Reports progress 1..steps of `steps` (50 ms apart) when given a progress token")
    async def report_progress(ctx: Context, steps: int = 3) -> str:
        steps = max(1, min(steps, 20))
        for step in range(1, steps + 1):
            await anyio.sleep(0.05)
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
        return f"Reported {steps} steps"

    @mcp.tool(description="Asks the user's name (elicitation) and greets them")
    async def ask_name(person: Annotated[ElicitationResult[Name], Resolve(name_of_user)]) -> str:
        return greeting_for(person)

    @mcp.tool(description="Asks the client's LLM the question (sampling) and returns its answer")
    async def ask_llm(question: str, answer: Annotated[CreateMessageResult, Resolve(llm_answer)]) -> str:
        return f"LLM said: {sampled_text(answer)}"

    @mcp.tool(description="Asks for the client's roots (roots/list) and lists them")
    async def list_roots(roots: Annotated[ListRootsResult, Resolve(client_roots)]) -> str:
        return f"Roots: {roots_text(roots)}"

    @mcp.tool(description="Asks for an elicitation, a sampling and the roots at once")
    async def ask_everything(
        person: Annotated[ElicitationResult[Name], Resolve(name_of_user)],
        answer: Annotated[CreateMessageResult, Resolve(everything_llm)],
        roots: Annotated[ListRootsResult, Resolve(client_roots)],
    ) -> str:
        return f"{greeting_for(person)} LLM said: {sampled_text(answer)} Roots: {roots_text(roots)}"

    @mcp.tool(description="Announces a tools and a prompts list change and an update of modern://greeting")
    async def announce_changes(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        await ctx.notify_prompts_changed()
        await ctx.notify_resource_updated(GREETING_URI)
        return "announced tools/list_changed, prompts/list_changed and resources/updated"

    @mcp.resource(GREETING_URI, name="greeting", description="A fixed greeting", mime_type="text/plain")
    def greeting() -> str:
        return "Hello from modern_server.py"

    @mcp.prompt(description="Asks the model to greet someone")
    def greet(name: str) -> str:
        return f"Please greet {name}."

    return mcp


class ModernOnly:
    """ASGI filter: 2026-07-28 requests go on to the SDK; anything else gets a -32022 that names
    the supported versions (a legacy client has no other way to learn why it failed)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1").strip() for k, v in scope["headers"]}
        version = headers.get("mcp-protocol-version", "")
        if version and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return await self.app(scope, receive, send)
        body = b""
        if scope["method"] == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        request_id: Any = None
        requested = version or None
        try:
            parsed = json.loads(body) if body else None
            if isinstance(parsed, dict):
                request_id = parsed.get("id")
                params = parsed.get("params")
                if parsed.get("method") == "initialize" and isinstance(params, dict):
                    requested = params.get("protocolVersion", requested)
        except ValueError:
            pass
        supported = list(MODERN_PROTOCOL_VERSIONS)
        error = {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": -32022,
                "message": f"Unsupported protocol version: this server speaks only {', '.join(supported)}",
                "data": {"supported": supported, "requested": requested},
            },
        }
        payload = json.dumps(error).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def serve(port: int, host: str, modern_only: bool, name: str) -> None:
    mcp = build_server(name)
    app: Any = mcp.streamable_http_app(host=host)
    if modern_only:
        app = ModernOnly(app)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    authority = f"[{host}]:{bound}" if family == socket.AF_INET6 else f"{host}:{bound}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    print(f"listening on http://{authority}/mcp", flush=True)
    await server.serve(sockets=[sock])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="TCP port (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--modern-only", action="store_true", help="refuse every request that is not 2026-07-28")
    parser.add_argument("--name", default="modern-server", help="the server name it reports")
    args = parser.parse_args(argv)
    anyio.run(serve, args.port, args.host, args.modern_only, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
