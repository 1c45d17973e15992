#!/usr/bin/env python3
"""Small upstream MCP server on the official Python SDK (`mcp` 2.3.0, `MCPServer` API).

Usage:
    python py_upstream.py PORT [--json] [--stateless] [--sse] [--dns-rebinding-protection] [--name NAME]

Listens on http://127.0.0.1:PORT/mcp (streamable HTTP).
  --json                      POST responses are application/json instead of SSE
  --stateless                 no Mcp-Session-Id (stateless_http)
  --sse                       serve the 2024-11-05 HTTP+SSE transport instead (GET /sse, POST /messages/)
  --dns-rebinding-protection  reject non-localhost Host/Origin (off by default: the gateway enforces it)
  --name NAME                 serverInfo.name (default "py-upstream")

Exposes:
  tools     add(a: int, b: int) -> int   (structuredContent {"result": a+b})
            echo(text: str) -> str
  resource  py://greeting  (text/plain, "Hello from py-upstream")
  prompt    greet(name: str)
  logging/setLevel (accepted, no-op)
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

warnings.filterwarnings("ignore", category=DeprecationWarning)

import mcp.types as types  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.transport_security import TransportSecuritySettings  # noqa: E402


def _opt(argv: list[str], flag: str, default: str) -> str:
    if flag in argv:
        i = argv.index(flag)
        if i + 1 < len(argv):
            return argv[i + 1]
    return default


def build(name: str) -> MCPServer:
    mcp = MCPServer(name, version="1.0.0", log_level="WARNING")

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the given text back."""
        return text

    @mcp.resource("py://greeting", name="greeting", description="A static greeting", mime_type="text/plain")
    def greeting() -> str:
        return f"Hello from {name}"

    @mcp.prompt()
    def greet(name: str) -> str:
        """Ask the model to greet someone."""
        return f"Please greet {name} warmly."

    # logging/setLevel (declares the `logging` capability), so the conformance
    # `logging-set-level` scenario passes against this upstream too.
    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    mcp._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    return mcp


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    port = int(argv[1])
    mcp = build(_opt(argv, "--name", "py-upstream"))
    if "--dns-rebinding-protection" in argv:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    else:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    if "--sse" in argv:
        # The 2024-11-05 HTTP+SSE transport: GET /sse, POST /messages/.
        mcp.run("sse", host="127.0.0.1", port=port, transport_security=security)
        return 0
    mcp.run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        json_response="--json" in argv,
        stateless_http="--stateless" in argv,
        transport_security=security,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
