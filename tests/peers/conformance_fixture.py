#!/usr/bin/env python3
"""MCP conformance fixture server (Python `mcp` SDK 2.3.0, low-level `Server` API).

Implements every fixture that the server scenarios of `@modelcontextprotocol/conformance@0.1.16`
call (the same tools/resources/prompts as the suite's reference `everything-server.ts`), so the
full suite can be run against muster with this server as its single upstream.

Usage:
    python conformance_fixture.py PORT [--dns-rebinding-protection] [--json] [--quiet] [--modern]

Listens on http://127.0.0.1:PORT/mcp (streamable HTTP, stateful sessions, SSE responses).

  --dns-rebinding-protection  reject Host/Origin other than 127.0.0.1/localhost/[::1] (HTTP 4xx).
                              Off by default: the gateway in front is what must enforce it, and an
                              upstream that enforced it too would mask a gateway that does not.
  --json                      answer POSTs with application/json instead of SSE.
  --quiet                     only log warnings.
  --modern                    also serve 2026-07-28 (the SDK answers `server/discover`, and a gateway
                              in front speaks that revision to it); test_input_required_result_elicitation
                              then answers with its own InputRequiredResult (key `user_name`), the
                              others still ask mid-call. Without it the fixture is a 2025
                              server: `server/discover` gets HTTP 400 and a JSON-RPC error, as servers
                              without the revision answer it, so the gateway falls back to `initialize`.

Fixtures:
  tools      test_simple_text, test_image_content, test_audio_content, test_embedded_resource,
             test_multiple_content_types, test_tool_with_logging, test_tool_with_progress,
             test_error_handling, test_sampling(prompt), test_elicitation(message),
             test_elicitation_sep1034_defaults, test_elicitation_sep1330_enums, test_reconnection,
             json_schema_2020_12_tool;
             for the 2026-07-28 requirements, as a 2025 server asks mid-call (muster turns the
             questions into an InputRequiredResult for a sessionless agent): test_missing_capability
             (sampling), test_input_required_result_{elicitation,sampling,list_roots,request_state,
             multiple_inputs,multi_round,tampered_state,capabilities}
  resources  test://static-text, test://static-binary, test://watched-resource,
             template test://template/{id}/data; resources/subscribe + unsubscribe
  prompts    test_simple_prompt, test_prompt_with_arguments(arg1, arg2),
             test_prompt_with_embedded_resource(resourceUri), test_prompt_with_image,
             test_input_required_result_prompt (elicits its context while being got)
  other      logging/setLevel, completion/complete, ping
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import sys
import warnings
from typing import Any

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*deprecated.*")

import mcp.types as types  # noqa: E402
import uvicorn  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp.shared.message import ServerMessageMetadata  # noqa: E402
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore  # noqa: E402
from mcp.server.transport_security import TransportSecuritySettings  # noqa: E402

log = logging.getLogger("conformance-fixture")

# 1x1 red PNG and a minimal WAV (same bytes as the reference everything-server.ts)
TEST_IMAGE_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
TEST_AUDIO_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
LOGGER_NAME = "conformance-test-server"

LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


# --------------------------------------------------------------------------------------------
# Event store (SSE resumability, SEP-1699) -- lets server-sse-polling / Last-Event-ID work.
# --------------------------------------------------------------------------------------------
class InMemoryEventStore(EventStore):
    def __init__(self, max_events: int = 10_000) -> None:
        self._events: list[tuple[str, int, Any]] = []
        self._counter = itertools.count(1)
        self._max = max_events

    async def store_event(self, stream_id: str, message: Any) -> str:
        n = next(self._counter)
        self._events.append((stream_id, n, message))
        if len(self._events) > self._max:
            del self._events[: len(self._events) - self._max]
        return str(n)

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        try:
            last = int(last_event_id)
        except ValueError:
            return None
        stream = next((s for s, n, _ in self._events if n == last), None)
        if stream is None:
            return None
        for s, n, message in list(self._events):
            if s == stream and n > last and message is not None:
                await send_callback(EventMessage(message, str(n)))
        return stream


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------
resource_subscriptions: set[str] = set()
# logging/setLevel is per connection; keyed by the ServerSession's connection object id.
_min_log_level: dict[int, str] = {}


def _conn_key(ctx: Any) -> int:
    conn = getattr(ctx.session, "_connection", None)
    return id(conn if conn is not None else ctx.session)


async def send_log(ctx: Any, level: str, data: Any) -> None:
    min_level = _min_log_level.get(_conn_key(ctx), "debug")
    if LOG_LEVELS.index(level) < LOG_LEVELS.index(min_level):
        return
    await ctx.session.send_log_message(level=level, data=data, logger=LOGGER_NAME, related_request_id=ctx.request_id)


def text(t: str) -> types.TextContent:
    return types.TextContent(type="text", text=t)


def image() -> types.ImageContent:
    return types.ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

JSON_SCHEMA_2020_12_INPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

TOOLS: list[types.Tool] = [
    types.Tool(name="test_simple_text", description="Tests simple text content response", input_schema=EMPTY_SCHEMA),
    types.Tool(name="test_image_content", description="Tests image content response", input_schema=EMPTY_SCHEMA),
    types.Tool(name="test_audio_content", description="Tests audio content response", input_schema=EMPTY_SCHEMA),
    types.Tool(
        name="test_embedded_resource",
        description="Tests embedded resource content response",
        input_schema=EMPTY_SCHEMA,
    ),
    types.Tool(
        name="test_multiple_content_types",
        description="Tests response with multiple content types (text, image, resource)",
        input_schema=EMPTY_SCHEMA,
    ),
    types.Tool(
        name="test_tool_with_logging",
        description="Tests tool that emits log messages during execution",
        input_schema=EMPTY_SCHEMA,
    ),
    types.Tool(
        name="test_tool_with_progress",
        description="Tests tool that reports progress notifications",
        input_schema=EMPTY_SCHEMA,
    ),
    types.Tool(name="test_error_handling", description="Tests error response handling", input_schema=EMPTY_SCHEMA),
    types.Tool(
        name="test_reconnection",
        description="Tests SSE stream disconnection and client reconnection (SEP-1699)",
        input_schema=EMPTY_SCHEMA,
    ),
    types.Tool(
        name="test_sampling",
        description="Tests server-initiated sampling (LLM completion request)",
        input_schema={
            "type": "object",
            "properties": {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
            "required": ["prompt"],
        },
    ),
    types.Tool(
        name="test_elicitation",
        description="Tests server-initiated elicitation (user input request)",
        input_schema={
            "type": "object",
            "properties": {"message": {"type": "string", "description": "The message to show the user"}},
            "required": ["message"],
        },
    ),
    types.Tool(
        name="test_elicitation_sep1034_defaults",
        description="Tests elicitation with default values per SEP-1034",
        input_schema=EMPTY_SCHEMA,
    ),
    types.Tool(
        name="test_elicitation_sep1330_enums",
        description="Tests elicitation with enum schema improvements per SEP-1330",
        input_schema=EMPTY_SCHEMA,
    ),
    *[
        types.Tool(name=name, description=description, input_schema=EMPTY_SCHEMA)
        for name, description in [
            ("test_missing_capability", "Needs sampling, which a client may not declare (SEP-2575)"),
            ("test_input_required_result_elicitation", "MRTR: asks the user's name (elicitation)"),
            ("test_input_required_result_sampling", "MRTR: asks for a completion (sampling)"),
            ("test_input_required_result_list_roots", "MRTR: asks for the client's roots"),
            ("test_input_required_result_request_state", "MRTR: asks for a confirmation"),
            ("test_input_required_result_multiple_inputs", "MRTR: asks elicitation, sampling and roots at once"),
            ("test_input_required_result_multi_round", "MRTR: asks twice, one question after the other"),
            ("test_input_required_result_tampered_state", "MRTR: asks for a confirmation"),
            ("test_input_required_result_capabilities", "MRTR: asks elicitation, then sampling, each if possible"),
        ]
    ],
    types.Tool(
        name="json_schema_2020_12_tool",
        description="Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
        input_schema=JSON_SCHEMA_2020_12_INPUT_SCHEMA,
    ),
]

SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Select one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}


async def _elicit(ctx: Any, message: str, schema: dict[str, Any], prefix: str) -> types.CallToolResult:
    try:
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        content = json.dumps(result.content or {}, separators=(",", ":"))
        return types.CallToolResult(content=[text(f"{prefix}: action={result.action}, content={content}")])
    except Exception as e:  # client without elicitation capability, timeout, ...
        return types.CallToolResult(content=[text(f"Elicitation not supported or error: {e}")])


# Set by --modern: the fixture serves 2026-07-28 and asks the 2026 way where it has a tool for it.
MODERN = False


def _elicit_in_rounds(params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    """`test_input_required_result_elicitation` the 2026-07-28 way: an `InputRequiredResult` under the
    key `user_name` (as the suite's reference server), complete once the retry brings an answer."""
    answer = (params.input_responses or {}).get("user_name")
    # The SDK may hand the answer over decoded (an ElicitResult) or as JSON.
    content = answer.get("content") if isinstance(answer, dict) else getattr(answer, "content", None)
    if not isinstance(content, dict):
        question = types.ElicitRequest(
            params=types.ElicitRequestFormParams(message="What is your name?", requested_schema=_schema("name"))
        )
        return types.InputRequiredResult(input_requests={"user_name": question}, request_state="fixture-round-1")
    return types.CallToolResult(content=[text(f"Hello, {content.get('name', '?')}!")])


def _schema(field: str, kind: str = "string") -> dict[str, Any]:
    return {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}


async def _ask_mid_call(ctx: Any, name: str) -> types.CallToolResult:
    """The 2026 scenarios' tools, asking the 2025 way: requests to the client during the call."""
    rid = ctx.request_id

    async def elicit(message: str, field: str, kind: str = "string") -> Any:
        result = await ctx.session.elicit_form(message, _schema(field, kind), related_request_id=rid)
        return (result.content or {}).get(field)

    async def sample(prompt: str) -> str:
        result = await ctx.session.create_message(
            messages=[types.SamplingMessage(role="user", content=text(prompt))], max_tokens=50, related_request_id=rid
        )
        return getattr(result.content, "text", None) or "no response"

    async def roots() -> int:
        # On the call's own stream, as create_message and elicit_form do with related_request_id.
        related = ServerMessageMetadata(related_request_id=rid)
        result = await ctx.session.send_request(types.ListRootsRequest(), types.ListRootsResult, metadata=related)
        return len(result.roots)

    try:
        if name == "test_missing_capability":
            return types.CallToolResult(content=[text(f"Success: {await sample('Say hello')}")])
        if name == "test_input_required_result_elicitation":
            return types.CallToolResult(content=[text(f"Hello, {await elicit('What is your name?', 'name')}!")])
        if name == "test_input_required_result_sampling":
            answer = await sample("What is the capital of France?")
            return types.CallToolResult(content=[text(f"Sampling result: {answer}")])
        if name == "test_input_required_result_list_roots":
            return types.CallToolResult(content=[text(f"Found {await roots()} root(s)")])
        if name in ("test_input_required_result_request_state", "test_input_required_result_tampered_state"):
            ok = await elicit("Please confirm", "ok", "boolean")
            word = "state-ok: requestState validated" if ok is True else "not confirmed"
            return types.CallToolResult(content=[text(word)])
        if name == "test_input_required_result_multiple_inputs":
            who, greeting, count = await asyncio.gather(
                elicit("What is your name?", "name"), sample("Generate a greeting"), roots()
            )
            return types.CallToolResult(content=[text(f"Name: {who}; Greeting: {greeting}; Roots: {count}")])
        if name == "test_input_required_result_multi_round":
            who = await elicit("Step 1: What is your name?", "name")
            color = await elicit("Step 2: What is your favorite color?", "color")
            return types.CallToolResult(content=[text(f"Multi-round complete for {who} who likes {color}")])
        if name == "test_input_required_result_capabilities":
            got = []
            for ask in (lambda: elicit("Elicitation input", "value"), lambda: sample("Sample request")):
                try:
                    await ask()
                    got.append("ok")
                except Exception:  # the client does not have this capability: skip it
                    got.append("skipped")
            return types.CallToolResult(content=[text(f"capabilities-ok: {','.join(got)}")])
    except Exception as e:  # refused by the client (or the gateway for it)
        return types.CallToolResult(content=[text(f"{name} could not ask the client: {e}")], is_error=True)
    return types.CallToolResult(content=[text(f"Unknown tool: {name}")], is_error=True)


async def handle_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def handle_call_tool(
    ctx: Any, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    name = params.name
    args = params.arguments or {}

    if MODERN and name == "test_input_required_result_elicitation":
        return _elicit_in_rounds(params)

    if name == "test_simple_text":
        return types.CallToolResult(content=[text("This is a simple text response for testing.")])

    if name == "test_image_content":
        return types.CallToolResult(content=[image()])

    if name == "test_audio_content":
        return types.CallToolResult(
            content=[types.AudioContent(type="audio", data=TEST_AUDIO_BASE64, mime_type="audio/wav")]
        )

    if name == "test_embedded_resource":
        return types.CallToolResult(
            content=[
                types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri="test://embedded-resource",
                        mime_type="text/plain",
                        text="This is an embedded resource content.",
                    ),
                )
            ]
        )

    if name == "test_multiple_content_types":
        return types.CallToolResult(
            content=[
                text("Multiple content types test:"),
                image(),
                types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri="test://mixed-content-resource",
                        mime_type="application/json",
                        text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
                    ),
                ),
            ]
        )

    if name == "test_tool_with_logging":
        await send_log(ctx, "info", "Tool execution started")
        await asyncio.sleep(0.05)
        await send_log(ctx, "info", "Tool processing data")
        await asyncio.sleep(0.05)
        await send_log(ctx, "info", "Tool execution completed")
        return types.CallToolResult(content=[text("Tool with logging executed successfully")])

    if name == "test_tool_with_progress":
        token = ctx.meta.get("progress_token") if isinstance(ctx.meta, dict) else getattr(ctx.meta, "progress_token", None)
        if token is None and isinstance(ctx.meta, dict):
            token = ctx.meta.get("progressToken")
        for i, step in enumerate((0, 50, 100)):
            if i:
                await asyncio.sleep(0.05)
            # No-op when the caller sent no progressToken.
            await ctx.session.report_progress(step, 100, f"Completed step {step} of 100")
        return types.CallToolResult(content=[text(str(token if token is not None else 0))])

    if name == "test_error_handling":
        return types.CallToolResult(
            content=[text("This tool intentionally returns an error for testing")], is_error=True
        )

    if name == "test_reconnection":
        # Close this request's SSE stream mid-call; the client must reconnect (GET + Last-Event-ID)
        # and receive the result replayed from the event store.
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        return types.CallToolResult(
            content=[
                text(
                    "Reconnection test completed successfully. If you received this, the client "
                    "properly reconnected after stream closure."
                )
            ]
        )

    if name == "test_sampling":
        prompt = str(args.get("prompt", ""))
        try:
            result = await ctx.session.create_message(
                messages=[types.SamplingMessage(role="user", content=text(prompt))],
                max_tokens=100,
                related_request_id=ctx.request_id,
            )
            content = result.content
            model_response = getattr(content, "text", None) or "No response"
            return types.CallToolResult(content=[text(f"LLM response: {model_response}")])
        except Exception as e:
            return types.CallToolResult(content=[text(f"Sampling not supported or error: {e}")])

    if name == "test_elicitation":
        schema = {
            "type": "object",
            "properties": {"response": {"type": "string", "description": "User's response"}},
            "required": ["response"],
        }
        return await _elicit(ctx, str(args.get("message", "")), schema, "User response")

    if name == "test_elicitation_sep1034_defaults":
        return await _elicit(
            ctx, "Please review and update the form fields with defaults", SEP1034_SCHEMA, "Elicitation completed"
        )

    if name == "test_elicitation_sep1330_enums":
        return await _elicit(ctx, "Please select options from the enum fields", SEP1330_SCHEMA, "Elicitation completed")

    if name == "test_missing_capability" or name.startswith("test_input_required_result_"):
        return await _ask_mid_call(ctx, name)

    if name == "json_schema_2020_12_tool":
        return types.CallToolResult(
            content=[text(f"JSON Schema 2020-12 tool called with: {json.dumps(args, separators=(',', ':'))}")]
        )

    return types.CallToolResult(content=[text(f"Unknown tool: {name}")], is_error=True)


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------
STATIC_RESOURCES = {
    "test://static-text": types.TextResourceContents(
        uri="test://static-text", mime_type="text/plain", text="This is the content of the static text resource."
    ),
    "test://static-binary": types.BlobResourceContents(
        uri="test://static-binary", mime_type="image/png", blob=TEST_IMAGE_BASE64
    ),
    "test://watched-resource": types.TextResourceContents(
        uri="test://watched-resource", mime_type="text/plain", text="Watched resource content"
    ),
}
TEMPLATE_RE = re.compile(r"^test://template/([^/]+)/data$")


async def handle_list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[
            types.Resource(
                uri="test://static-text",
                name="static-text",
                title="Static Text Resource",
                description="A static text resource for testing",
                mime_type="text/plain",
            ),
            types.Resource(
                uri="test://static-binary",
                name="static-binary",
                title="Static Binary Resource",
                description="A static binary resource (image) for testing",
                mime_type="image/png",
            ),
            types.Resource(
                uri="test://watched-resource",
                name="watched-resource",
                title="Watched Resource",
                description="A resource that can be subscribed to",
                mime_type="text/plain",
            ),
        ]
    )


async def handle_list_resource_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(
        resource_templates=[
            types.ResourceTemplate(
                uri_template="test://template/{id}/data",
                name="template",
                title="Resource Template",
                description="A resource template with parameter substitution",
                mime_type="application/json",
            )
        ]
    )


async def handle_read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri in STATIC_RESOURCES:
        return types.ReadResourceResult(contents=[STATIC_RESOURCES[uri]])
    m = TEMPLATE_RE.match(uri)
    if m:
        rid = m.group(1)
        body = json.dumps({"id": rid, "templateTest": True, "data": f"Data for ID: {rid}"}, separators=(",", ":"))
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=body)]
        )
    # -32002 "Resource not found" per spec
    from mcp.shared.exceptions import MCPError

    raise MCPError(code=-32002, message=f"Resource not found: {uri}", data={"uri": uri})


async def handle_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    resource_subscriptions.add(str(params.uri))
    log.info("subscribed to %s", params.uri)
    return types.EmptyResult()


async def handle_unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    resource_subscriptions.discard(str(params.uri))
    log.info("unsubscribed from %s", params.uri)
    return types.EmptyResult()


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------
PROMPTS = [
    types.Prompt(name="test_simple_prompt", title="Simple Test Prompt", description="A simple prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        title="Prompt With Arguments",
        description="A prompt with required arguments",
        arguments=[
            types.PromptArgument(name="arg1", description="First test argument", required=True),
            types.PromptArgument(name="arg2", description="Second test argument", required=True),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        title="Prompt With Embedded Resource",
        description="A prompt that includes an embedded resource",
        arguments=[types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)],
    ),
    types.Prompt(
        name="test_input_required_result_prompt",
        description="MRTR: asks for the prompt's context (elicitation) while it is being got",
    ),
    types.Prompt(
        name="test_prompt_with_image", title="Prompt With Image", description="A prompt that includes image content"
    ),
]


async def handle_list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=PROMPTS)


async def handle_get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    from mcp.shared.exceptions import MCPError

    args = params.arguments or {}
    name = params.name
    if name == "test_simple_prompt":
        msgs = [types.PromptMessage(role="user", content=text("This is a simple prompt for testing."))]
    elif name == "test_prompt_with_arguments":
        missing = [a for a in ("arg1", "arg2") if a not in args]
        if missing:
            raise MCPError(code=-32602, message=f"Missing required arguments: {', '.join(missing)}")
        msgs = [
            types.PromptMessage(
                role="user", content=text(f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'")
            )
        ]
    elif name == "test_prompt_with_embedded_resource":
        uri = args.get("resourceUri")
        if not uri:
            raise MCPError(code=-32602, message="Missing required argument: resourceUri")
        msgs = [
            types.PromptMessage(
                role="user",
                content=types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri=uri, mime_type="text/plain", text="Embedded resource content for testing."
                    ),
                ),
            ),
            types.PromptMessage(role="user", content=text("Please process the embedded resource above.")),
        ]
    elif name == "test_input_required_result_prompt":
        asked = await ctx.session.elicit_form(
            "What context should the prompt use?", _schema("context"), related_request_id=ctx.request_id
        )
        msgs = [types.PromptMessage(role="user", content=text(f"Prompt with context: {(asked.content or {}).get('context')}"))]
    elif name == "test_prompt_with_image":
        msgs = [
            types.PromptMessage(role="user", content=image()),
            types.PromptMessage(role="user", content=text("Please analyze the image above.")),
        ]
    else:
        raise MCPError(code=-32602, message=f"Unknown prompt: {name}")
    return types.GetPromptResult(messages=msgs)


# --------------------------------------------------------------------------------------------
# Logging + completion
# --------------------------------------------------------------------------------------------
async def handle_set_logging_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    _min_log_level[_conn_key(ctx)] = str(params.level)
    log.info("log level set to %s", params.level)
    return types.EmptyResult()


COMPLETION_WORDS = ["paris", "park", "party", "test", "testValue1", "testValue2"]


async def handle_completion(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
    prefix = params.argument.value or ""
    values = [w for w in COMPLETION_WORDS if w.startswith(prefix)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


# --------------------------------------------------------------------------------------------
def build_server() -> Server:
    return Server(
        "mcp-conformance-test-server",
        version="1.0.0",
        on_list_tools=handle_list_tools,
        on_call_tool=handle_call_tool,
        on_list_resources=handle_list_resources,
        on_list_resource_templates=handle_list_resource_templates,
        on_read_resource=handle_read_resource,
        on_subscribe_resource=handle_subscribe,
        on_unsubscribe_resource=handle_unsubscribe,
        on_list_prompts=handle_list_prompts,
        on_get_prompt=handle_get_prompt,
        on_completion=handle_completion,
        on_set_logging_level=handle_set_logging_level,
    )


def refuse_discover(app):
    """ASGI wrapper: a sessionless POST of `server/discover` gets what a 2025-only server answers."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        body, more, messages = b"", True, []
        while more:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if b'"server/discover"' in body:
            error = {"jsonrpc": "2.0", "id": "server-error",
                     "error": {"code": -32600, "message": "Bad Request: No valid session ID provided"}}
            payload = json.dumps(error).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
            return

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await app(scope, replay, send)

    return wrapped


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    port = int(argv[1])
    flags = set(argv[2:])
    logging.basicConfig(
        level=logging.WARNING if "--quiet" in flags else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if "--dns-rebinding-protection" in flags:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    else:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)

    server = build_server()
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response="--json" in flags,
        event_store=InMemoryEventStore(),
        retry_interval=100,
        transport_security=security,
        host="127.0.0.1",
    )
    global MODERN
    MODERN = "--modern" in flags
    if not MODERN:
        app = refuse_discover(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning" if "--quiet" in flags else "info")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
