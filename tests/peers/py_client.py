#!/usr/bin/env python3
"""Real MCP client on the official Python SDK (`mcp` 2.3.0), for driving muster from tests.

Usage:
    py_client.py URL list                         -> JSON list of tool names
    py_client.py URL call TOOL 'JSON-ARGS'        -> {"isError": bool, "text": str, "structured": obj|null}
    py_client.py URL resources                    -> JSON list of resource URIs
    py_client.py URL read URI                     -> {"contents": [...]} (SDK model dump, camelCase)
    py_client.py URL prompts                      -> JSON list of prompt names
    py_client.py URL prompt NAME ['JSON-ARGS']    -> {"messages": [...]}
    py_client.py URL info                         -> {"protocolVersion": str, "serverInfo": {...}}

Options (anywhere after URL):
    --header 'Name: value'   extra HTTP header on every request (repeatable), e.g. Authorization
    --mode legacy|auto       protocol negotiation (default: legacy = initialize handshake).
                             'auto' is the SDK default: it first probes `server/discover`
                             (protocol 2026-07-28) and falls back to initialize on any error.
    --timeout SECONDS        per-request read timeout (default 30)

"text" is the concatenation ("".join) of all text content items of the tool result.
Exit codes: 0 = success (a tool result with isError=true is still a success),
            1 = JSON-RPC error from the server (printed as {"error": {"code", "message"}} on stdout),
            2 = usage / transport / connection failure (message on stderr).
"""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from typing import Any

warnings.filterwarnings("ignore", category=DeprecationWarning)

from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[str, list[str], dict[str, str], str, float]:
    headers: dict[str, str] = {}
    mode = "legacy"
    timeout = 30.0
    pos: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--header", "-H"):
            if i + 1 >= len(argv) or ":" not in argv[i + 1]:
                raise UsageError("--header needs 'Name: value'")
            k, v = argv[i + 1].split(":", 1)
            headers[k.strip()] = v.strip()
            i += 2
        elif a == "--mode":
            if i + 1 >= len(argv):
                raise UsageError("--mode needs a value")
            mode = argv[i + 1]
            i += 2
        elif a == "--timeout":
            if i + 1 >= len(argv):
                raise UsageError("--timeout needs a value")
            timeout = float(argv[i + 1])
            i += 2
        else:
            pos.append(a)
            i += 1
    if len(pos) < 2:
        raise UsageError("need URL and a command")
    return pos[0], pos[1:], headers, mode, timeout


def dump(obj: Any) -> Any:
    return obj.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)


async def run(url: str, cmd: list[str], headers: dict[str, str], mode: str, timeout: float) -> Any:
    op = cmd[0]
    async with create_mcp_http_client(headers=headers or None) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=timeout, cache=None) as client:
            if op == "list":
                names: list[str] = []
                cursor = None
                while True:
                    res = await client.list_tools(cursor=cursor)
                    names.extend(t.name for t in res.tools)
                    cursor = res.next_cursor
                    if not cursor:
                        return names
            if op == "call":
                if len(cmd) < 2:
                    raise UsageError("call needs TOOL ['JSON-ARGS']")
                args = json.loads(cmd[2]) if len(cmd) > 2 else {}
                res = await client.call_tool(cmd[1], args)
                text = "".join(c.text for c in res.content if getattr(c, "type", None) == "text")
                return {"isError": bool(res.is_error), "text": text, "structured": res.structured_content}
            if op == "resources":
                uris: list[str] = []
                cursor = None
                while True:
                    res = await client.list_resources(cursor=cursor)
                    uris.extend(str(r.uri) for r in res.resources)
                    cursor = res.next_cursor
                    if not cursor:
                        return uris
            if op == "read":
                if len(cmd) < 2:
                    raise UsageError("read needs URI")
                return dump(await client.read_resource(cmd[1]))
            if op == "prompts":
                res = await client.list_prompts()
                return [p.name for p in res.prompts]
            if op == "prompt":
                if len(cmd) < 2:
                    raise UsageError("prompt needs NAME ['JSON-ARGS']")
                args = json.loads(cmd[2]) if len(cmd) > 2 else None
                return dump(await client.get_prompt(cmd[1], args))
            if op == "info":
                info = client.server_info
                return {"protocolVersion": client.protocol_version, "serverInfo": dump(info) if info else None}
            raise UsageError(f"unknown command {op!r}")


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            leaf = _leaf(e)
            if isinstance(leaf, (MCPError, UsageError)):
                return leaf
    return exc


def main(argv: list[str]) -> int:
    try:
        url, cmd, headers, mode, timeout = parse_args(argv[1:])
        out = asyncio.run(run(url, cmd, headers, mode, timeout))
    except BaseException as raw:  # noqa: BLE001
        if isinstance(raw, (KeyboardInterrupt, SystemExit)):
            raise
        exc = _leaf(raw)
        if isinstance(exc, UsageError):
            print(f"usage error: {exc}\n{__doc__}", file=sys.stderr)
            return 2
        if isinstance(exc, MCPError):
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
            return 1
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
