#!/usr/bin/env python3
"""A real stdio MCP client on the official Python SDK, driven line by line by a test.

Usage:
    py_stdio_client.py COMMAND [ARGS...]     launches COMMAND over stdio (the SDK's stdio_client),
                                             initializes (legacy handshake), prints {"ready": true}

Then reads one JSON command per line on stdin and prints one JSON line per command on stdout:
    {"op": "list"}                                  -> {"tools": [names]}
    {"op": "call", "tool": NAME, "args": {...}}     -> {"isError": bool, "text": str, "structured": obj|null}
    {"op": "wait", "method": METHOD}                -> {"notified": METHOD} once such a notification has
                                                       arrived (each arrival answers one wait)
Sampling requests (from muster's upstreams, relayed by the bridge) are answered with the text
"sampled: <the request's first message text>", model "py-stdio-client".
Any failure of a command prints {"error": "..."}. EOF on stdin closes the session and exits 0.
The child's environment is this process's environment; its stderr goes to this process's stderr.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import defaultdict

warnings.filterwarnings("ignore", category=DeprecationWarning)

import anyio  # noqa: E402
from mcp import Client, types  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402


def out(value: object) -> None:
    print(json.dumps(value), flush=True)


async def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    arrived: dict[str, int] = defaultdict(int)
    changed = anyio.Event()
    state = {"changed": changed}

    async def on_message(message: object) -> None:
        method = getattr(message, "method", None) or getattr(getattr(message, "root", None), "method", None)
        if isinstance(method, str):
            arrived[method] += 1
            state["changed"].set()

    async def on_sampling(_context: object, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked = getattr(params.messages[0].content, "text", "") if params.messages else ""
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"sampled: {asked}"), model="py-stdio-client"
        )

    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    async with Client(
        stdio_client(params), mode="legacy", message_handler=on_message, sampling_callback=on_sampling, cache=None
    ) as client:
        out({"ready": True})
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return 0
            if not line.strip():
                continue
            try:
                cmd = json.loads(line)
                op = cmd["op"]
                if op == "list":
                    names: list[str] = []
                    cursor = None
                    while True:
                        res = await client.list_tools(cursor=cursor)
                        names.extend(t.name for t in res.tools)
                        cursor = res.next_cursor
                        if not cursor:
                            break
                    out({"tools": names})
                elif op == "call":
                    res = await client.call_tool(cmd["tool"], cmd.get("args") or {})
                    text = "".join(c.text for c in res.content if getattr(c, "type", None) == "text")
                    out({"isError": bool(res.is_error), "text": text, "structured": res.structured_content})
                elif op == "wait":
                    method = cmd["method"]
                    while arrived[method] == 0:
                        state["changed"] = anyio.Event()
                        await state["changed"].wait()
                    arrived[method] -= 1
                    out({"notified": method})
                else:
                    out({"error": f"unknown op {op!r}"})
            except Exception as exc:  # noqa: BLE001 - the test reads the error
                out({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
