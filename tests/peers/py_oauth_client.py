#!/usr/bin/env python3
"""The Python MCP SDK's own OAuth client (`OAuthClientProvider`) signing in to muster as the
authorization server, for muster's tests (test-only code).

Usage:
    py_oauth_client.py URL CENTRAL_ISSUER USER TOOL 'JSON-ARGS' --node NODE --login IDP_LOGIN_MJS [--cimd URL]
        [--browser BROWSER_MJS --chromium PATH]

The SDK does everything an IDE agent does: /mcp -> 401 -> RFC 9728 -> RFC 8414 -> dynamic
registration -> authorize with PKCE (it checks `state` and RFC 9207 `iss`) -> token. The browser
step is `idp_login.mjs --follow-url AUTHORIZE_URL --location` (the central IdP's login forms), or
with `--browser BROWSER_MJS --chromium PATH` a real Chromium (`browser.mjs signin`) that signs in at
the IdP's pages and lands on this client's loopback listener (RFC 8252), which takes the code from
that request as an IDE agent does; the result then carries "browser": browser.mjs's JSON.
With --cimd, the SDK uses that https Client ID Metadata Document URL as its client_id instead of
registering (when the server advertises CIMD support).
Calls TOOL, then marks the access token expired so that the SDK refreshes it, and calls TOOL again.
Prints one JSON line: {"first": RESULT, "second": RESULT, "refreshed": bool, "logins": N, "client_id": str}
where RESULT is {"isError", "text", "structured"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import warnings
from urllib.parse import parse_qs, urlparse

warnings.filterwarnings("ignore", category=DeprecationWarning)

from mcp import Client  # noqa: E402
from mcp.client.auth import OAuthClientProvider  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken  # noqa: E402


class Memory:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def main(argv: list[str]) -> dict:
    pos, opts = [], {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("--"):
            opts[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            pos.append(argv[i])
            i += 1
    url, central, user, tool, args = pos[0], pos[1], pos[2], pos[3], json.loads(pos[4])
    redirected: dict[str, str] = {}
    logins = 0
    browser: dict = {}
    redirect_uri = "http://127.0.0.1:53124/callback"
    if "browser" in opts:
        # The agent's loopback listener: the browser lands here with ?code=..&state=..&iss=..
        async def on_callback(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request_line = (await reader.readline()).decode("latin-1").split(" ")
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            target = urlparse(request_line[1] if len(request_line) > 1 else "/")
            if target.path == "/callback":
                redirected.clear()
                redirected.update({k: v[0] for k, v in parse_qs(target.query).items()})
            body = b"<!doctype html><title>python sdk agent</title><p>Signed in. You can close this window.</p>"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        listener = await asyncio.start_server(on_callback, "127.0.0.1", 0)
        redirect_uri = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/callback"

    async def redirect_handler(authorization_url: str) -> None:
        nonlocal logins
        logins += 1
        if "browser" in opts:
            proc = await asyncio.create_subprocess_exec(
                opts["node"], opts["browser"], opts["chromium"], "signin", authorization_url, user,
                "--until", redirect_uri, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"browser sign-in failed: {out.decode()} {err.decode()}")
            browser.clear()
            browser.update(json.loads(out))
            return
        proc = await asyncio.create_subprocess_exec(
            opts["node"], opts["login"], central, user, "--follow-url", authorization_url, "--location",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"login failed: {out.decode()} {err.decode()}")
        location = json.loads(out)["location"]
        query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
        redirected.clear()
        redirected.update(query)

    async def callback_handler() -> AuthorizationCodeResult:
        if "error" in redirected:
            raise RuntimeError(f"authorization failed: {redirected}")
        return AuthorizationCodeResult(code=redirected["code"], state=redirected.get("state"), iss=redirected.get("iss"))

    storage = Memory()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[redirect_uri],
            client_name="python sdk agent",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        client_metadata_url=opts.get("cimd"),
        callback_handler=callback_handler,
    )

    async def call() -> dict:
        async with create_mcp_http_client(auth=provider) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode="legacy", read_timeout_seconds=30, cache=None) as client:
                res = await client.call_tool(tool, args)
                text = "".join(c.text for c in res.content if getattr(c, "type", None) == "text")
                return {"isError": bool(res.is_error), "text": text, "structured": res.structured_content}

    first = await call()
    before = storage.tokens.access_token if storage.tokens else None
    provider.context.token_expiry_time = time.time() - 1
    second = await call()
    after = storage.tokens.access_token if storage.tokens else None
    return {
        "first": first,
        "second": second,
        "refreshed": before is not None and after is not None and before != after,
        "logins": logins,
        "client_id": storage.client.client_id if storage.client else None,
        **({"browser": browser} if "browser" in opts else {}),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
