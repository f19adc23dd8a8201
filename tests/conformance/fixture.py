"""The primitives the official MCP conformance suite calls, registered through the product's own seam.

``register_fixture`` is a tool provider handed to ``create_app(register_tools=...)``,
in place of the ones MCP_TOOLS would name, so every call the suite makes crosses the same
authentication, scope checks, bridge and SDK as a real deployment. This module
is test code: it never ships with the product.

Names and payloads follow what ``@modelcontextprotocol/conformance`` 0.1.16
calls and checks (its scenarios under ``src/scenarios/server/``), with the
payload texts its scenario descriptions document. The suite checks some of
them loosely (content must be non-empty); the fixture returns the documented
ones all the same, so its answers are the ones a stricter version would expect.

Each primitive declares a scope, and the proxy's token grants them: the suite
then also proves that per-primitive scope checks let authorised calls through
untouched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import warnings
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import AudioContent
from mcp.types import CallToolResult
from mcp.types import Completion
from mcp.types import CompletionArgument
from mcp.types import CompletionContext
from mcp.types import ElicitRequest
from mcp.types import ElicitRequestFormParams
from mcp.types import ElicitResult
from mcp.types import EmbeddedResource
from mcp.types import EmptyResult
from mcp.types import ImageContent
from mcp.types import InputRequiredResult
from mcp.types import PromptReference
from mcp.types import ResourceTemplateReference
from mcp.types import SamplingMessage
from mcp.types import SetLevelRequestParams
from mcp.types import SubscribeRequestParams
from mcp.types import TextContent
from mcp.types import TextResourceContents
from mcp.types import UnsubscribeRequestParams

from app.provider import ScopedServer

# Log messages and sampling are handshake-era features that the SDK marks
# deprecated for 2026-07-28. The suite speaks 2025-11-25, so the fixture uses
# them; the filter covers the fixture's own calls only.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=__name__)

TOOLS_SCOPE = "conformance:tools"
RESOURCES_SCOPE = "conformance:resources"
PROMPTS_SCOPE = "conformance:prompts"
SCOPES = (TOOLS_SCOPE, RESOURCES_SCOPE, PROMPTS_SCOPE)

# A 1x1 red PNG and a minimal WAV, as in the suite's reference server.
TEST_IMAGE_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
TEST_AUDIO_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# The suite's client answers elicitation/create with {username, email}; the
# schema asks for exactly that, so the SDK's validation of the answer passes.
USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

# SEP-1034: a default for every primitive type.
DEFAULTS_SCHEMA: dict[str, Any] = {
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

# SEP-1330: every enum shape, single and multi select, titled and not, and the legacy enumNames.
ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Simple enum without titles",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Enum with titled options (oneOf)",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Legacy enum with enumNames",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Multi-select without titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Multi-select with titled options",
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

# SEP-1613 / SEP-2106: tools/list must show this input schema unchanged (the pending json-schema-2020-12 scenario).
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

# The 2026-07-28 multi-round-trip tool: the question it asks, and the answer's shape.
CONFIRM_KEY = "confirm"
CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean", "description": "Whether to go ahead"}},
    "required": ["ok"],
}


async def _log(ctx: Context, message: str) -> None:
    """An info log notification on this request's own stream."""
    await ctx.session.send_log_message("info", message, related_request_id=ctx.request_id)


def _answer(result: ElicitResult) -> str:
    return json.dumps(result.content if result.action == "accept" else {}, separators=(",", ":"))


def register_fixture(server: ScopedServer) -> None:
    """Everything the suite calls: a tool provider like any other."""
    _register_tools(server)
    _register_resources(server)
    _register_prompts(server)
    _register_handlers(server)


def _register_tools(server: ScopedServer) -> None:
    tool = server.tool(scopes=[TOOLS_SCOPE])

    @tool
    def test_simple_text() -> str:
        """Returns one text content item."""
        return "This is a simple text response for testing."

    @tool
    def test_image_content() -> list[ImageContent]:
        """Returns one image content item (a PNG)."""
        return [ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")]

    @tool
    def test_audio_content() -> list[AudioContent]:
        """Returns one audio content item (a WAV)."""
        return [AudioContent(type="audio", data=TEST_AUDIO_BASE64, mime_type="audio/wav")]

    @tool
    def test_embedded_resource() -> list[EmbeddedResource]:
        """Returns one embedded text resource."""
        return [
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="test://embedded-resource",
                    mime_type="text/plain",
                    text="This is an embedded resource content.",
                ),
            )
        ]

    @tool
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        """Returns text, an image and an embedded resource in one result."""
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png"),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="test://mixed-content-resource",
                    mime_type="application/json",
                    text='{"test":"data","value":123}',
                ),
            ),
        ]

    @tool
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three log notifications on the request's stream while it runs."""
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            if message != "Tool execution started":
                await asyncio.sleep(0.05)
            await _log(ctx, message)
        return "Tool with logging executed successfully"

    @tool
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100 against the caller's progress token."""
        for step in (0, 50, 100):
            if step:
                await asyncio.sleep(0.05)
            await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
        meta = ctx.request_context.meta or {}
        return str(meta.get("progress_token", ""))

    @tool
    def test_error_handling() -> CallToolResult:
        """Returns a tool execution error (isError), not a JSON-RPC error."""
        return CallToolResult(
            content=[TextContent(type="text", text="This tool intentionally returns an error for testing")],
            is_error=True,
        )

    @tool
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's model to complete ``prompt`` (sampling/createMessage) and returns its answer."""
        # related_request_id puts the request on this call's own stream, which
        # is open now; the standalone GET stream may not be open yet.
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = content.text if isinstance(content, TextContent) else f"<{content.type} content>"
        return f"LLM response: {text}"

    @tool
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user for a username and an email address (elicitation/create)."""
        result = await ctx.session.elicit_form(message, USER_SCHEMA, related_request_id=ctx.request_id)
        return f"User response: action={result.action}, content={_answer(result)}"

    @tool
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicits a form whose fields all carry defaults (SEP-1034)."""
        result = await ctx.session.elicit_form(
            "Please provide user information", DEFAULTS_SCHEMA, related_request_id=ctx.request_id
        )
        return f"Elicitation completed: action={result.action}, content={_answer(result)}"

    @tool
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicits a form with every enum shape of SEP-1330."""
        result = await ctx.session.elicit_form(
            "Please select values using different enum schema types", ENUMS_SCHEMA, related_request_id=ctx.request_id
        )
        return f"Elicitation completed: action={result.action}, content={_answer(result)}"

    @tool
    def json_schema_2020_12_tool() -> str:
        """Has a JSON Schema 2020-12 input schema that tools/list must show unchanged."""
        return "json_schema_2020_12_tool"

    # MCPServer.tool() has no input_schema= yet: set the schema the SDK derived.
    server.mcp._tool_manager.get_tool("json_schema_2020_12_tool").parameters = JSON_SCHEMA_2020_12  # type: ignore[union-attr]

    @tool
    async def test_reconnection(ctx: Context) -> str:
        """Closes its own SSE stream mid-call, for clients that resume with Last-Event-ID (SEP-1699)."""
        await _log(ctx, "Before disconnect")
        # A no-op unless the transport keeps an event store to replay from.
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        await _log(ctx, "After reconnect")
        return "Reconnection test completed"

    @tool
    async def confirm_across_workers(ctx: Context) -> str | InputRequiredResult:
        """Asks for a confirmation the 2026-07-28 way and says which worker processes asked and answered.

        The first round answers with an InputRequiredResult whose requestState
        carries this process's id; the SDK seals it with MCP_STATE_SECRET. The
        client's retry may reach another worker, which can open the state only
        if it holds the same secret.
        """
        responses = ctx.input_responses or {}
        answer = responses.get(CONFIRM_KEY)
        if ctx.request_state is None or not isinstance(answer, ElicitResult):
            return InputRequiredResult(
                input_requests={
                    CONFIRM_KEY: ElicitRequest(
                        params=ElicitRequestFormParams(message="Please confirm", requested_schema=CONFIRM_SCHEMA)
                    )
                },
                request_state=json.dumps({"asked_by": os.getpid()}),
            )
        state = json.loads(ctx.request_state)
        return json.dumps(
            {
                "asked_by": state["asked_by"],
                "answered_by": os.getpid(),
                "action": answer.action,
                "content": answer.content,
            }
        )


def _register_resources(server: ScopedServer) -> None:
    @server.resource(
        "test://static-text",
        scopes=[RESOURCES_SCOPE],
        name="static-text",
        description="A static text resource for testing",
        mime_type="text/plain",
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary",
        scopes=[RESOURCES_SCOPE],
        name="static-binary",
        description="A static binary resource (image) for testing",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        return base64.b64decode(TEST_IMAGE_BASE64)

    @server.resource(
        "test://watched-resource",
        scopes=[RESOURCES_SCOPE],
        name="watched-resource",
        description="A resource clients may subscribe to",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return "Watched resource content"

    @server.resource(
        "test://template/{id}/data",
        scopes=[RESOURCES_SCOPE],
        name="template",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))


def _register_prompts(server: ScopedServer) -> None:
    prompt = server.prompt(scopes=[PROMPTS_SCOPE])

    @prompt
    def test_simple_prompt() -> list[UserMessage]:
        """A simple prompt without arguments."""
        return [UserMessage(content=TextContent(type="text", text="This is a simple prompt for testing."))]

    @prompt
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        """A prompt with two required arguments."""
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [UserMessage(content=TextContent(type="text", text=text))]

    @prompt
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        """A prompt that embeds the resource it is given."""
        return [
            UserMessage(
                content=EmbeddedResource(
                    type="resource",
                    resource=TextResourceContents(
                        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                    ),
                )
            ),
            UserMessage(content=TextContent(type="text", text="Please process the embedded resource above.")),
        ]

    @prompt
    def test_prompt_with_image() -> list[UserMessage]:
        """A prompt that carries an image."""
        return [
            UserMessage(content=ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")),
            UserMessage(content=TextContent(type="text", text="Please analyze the image above.")),
        ]


def _register_handlers(server: ScopedServer) -> None:
    """logging/setLevel, resources/(un)subscribe and completion/complete, which MCPServer leaves to the app."""
    lowlevel = server.mcp._lowlevel_server

    async def accept(ctx: ServerRequestContext[Any, Any], params: Any) -> EmptyResult:
        # The fixture's resources never change, so a subscription has nothing to
        # deliver, and every log level is fine: accepting is the whole job.
        return EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, accept)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, accept)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, accept)

    @server.mcp.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        return Completion(values=[], total=0, has_more=False)
