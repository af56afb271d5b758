"""A scripted stand-in for the Anthropic Messages API, so the suite can drive the real Claude Code
CLI offline: `claude -p` with ANTHROPIC_BASE_URL pointing here sends its requests to this server,
which answers each turn of the agent's conversation with the next turn of a script (a tool call,
or a final text) and records every request, so that a test can read the tool results the CLI
sent back.

What Claude Code 2.1.197 sends (seen by logging every request, `-p` and interactive alike):
`HEAD /` once at start (a reachability probe: any 200 will do), then one
`POST /v1/messages?beta=true` per turn of the agent, streamed (`"stream": true`, answered with
server-sent events), with its system prompt, all its tools (24 in `-p`: Write, Edit, Bash, Read,
...), `x-api-key`, `anthropic-version: 2023-06-01`, an `anthropic-beta` list and
`X-Claude-Code-Session-Id`. The tool results of a turn come back as `tool_result` blocks in the
last user message of the next request. No side request was seen (titles, summaries, quota
probes); should one come (to /v1/messages without the agent's tools), it gets a short text and
does not use up the script. count_tokens is answered too; anything else gets a 404 in the API's
error format, and every request is recorded.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def read_body(handler: BaseHTTPRequestHandler) -> Any:
    """A request's body: its JSON, else its text, else None (the stand-ins of every agent CLI's API)."""
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class ToolUse:
    """A turn in which the model calls one tool (`text`, if given, is said before the call)."""
    name: str
    input: Mapping[str, Any]
    text: str = ""


@dataclass(frozen=True)
class Say:
    """A turn in which the model answers with text and ends its turn."""
    text: str


Turn = ToolUse | Say


@dataclass
class Request:
    """One request as the server received it. `turn` is the index of the script's turn it was
    answered with, or None for a side request or anything that is not the agent's turn."""
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    turn: int | None = None

    def last_user_blocks(self) -> list[dict[str, Any]]:
        """The content blocks of the last user message (where the CLI puts its tool results)."""
        messages = self.body.get("messages", []) if isinstance(self.body, dict) else []
        for message in reversed(messages):
            if message.get("role") == "user":
                content = message.get("content")
                return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        return []


@dataclass(frozen=True)
class ToolResult:
    """What the CLI sent back to the model for one scripted tool call."""
    tool_use_id: str
    turn: int | None  # the index in the script of the tool call it answers
    is_error: bool
    text: str
    raw: dict[str, Any] = field(repr=False)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def is_agent_turn(body: Any) -> bool:
    """The default test of a request for the agent's next turn: the agent's main loop sends its
    tools, Write among them; side requests (titles, summaries, quota probes) send none or others."""
    if not isinstance(body, dict):
        return False
    return any(isinstance(t, dict) and t.get("name") in {"Write", "Edit", "Bash"} for t in body.get("tools") or ())


class ModelServer:
    """Serve `script` on 127.0.0.1 (a free port) in a thread of this process; use as a context
    manager, or start() and stop(). Each agent turn gets the next scripted turn; when the script
    is used up, further turns get a text saying so (and `overrun` counts them)."""

    SIDE_TEXT = "OK"
    EXHAUSTED_TEXT = "model_server: the script has no more turns."

    def __init__(self, script: Sequence[Turn], *, is_turn: Callable[[Any], bool] = is_agent_turn,
                 model: str = "claude-sonnet-4-5") -> None:
        self.script = list(script)
        self.is_turn = is_turn
        self.model = model
        self.requests: list[Request] = []
        self.overrun = 0
        self._next = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._tool_ids = itertools.count(1)
        self._tool_turns: dict[str, int] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> ModelServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # stop() does not wait for a client's idle keep-alive connection
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="model-server",
                                        daemon=True)  # (polled for shutdown every 20 ms, not 0.5 s)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the model server is not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The environment that points Claude Code at this server and keeps it off the network."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-model-server",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    # -- what was asked -------------------------------------------------------------------------

    @property
    def remaining(self) -> int:
        """Turns of the script not yet served."""
        with self._lock:
            return len(self.script) - self._next

    @property
    def turns(self) -> list[Request]:
        """The requests answered from the script, in order."""
        with self._lock:
            return [r for r in self.requests if r.turn is not None]

    @property
    def side_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.turn is None]

    def tool_results(self) -> list[ToolResult]:
        """Every tool result the CLI sent back for a scripted tool call, in order."""
        found = []
        for request in self.turns:
            for block in request.last_user_blocks():
                if block.get("type") == "tool_result":
                    tool_use_id = str(block.get("tool_use_id"))
                    found.append(ToolResult(tool_use_id, self._tool_turns.get(tool_use_id),
                                            bool(block.get("is_error", False)), _text_of(block.get("content")), block))
        return found

    # -- answering ------------------------------------------------------------------------------

    def _answer(self, body: Any) -> tuple[int | None, Turn]:
        """Record a Messages request's turn and choose the turn it is answered with."""
        if not self.is_turn(body):
            return None, Say(self.SIDE_TEXT)
        with self._lock:
            if self._next >= len(self.script):
                self.overrun += 1
                return None, Say(self.EXHAUSTED_TEXT)
            index, self._next = self._next, self._next + 1
        return index, self.script[index]

    def message(self, turn: Turn, model: str | None, index: int | None = None) -> dict[str, Any]:
        """The complete (non-streamed) Messages API response for `turn` (the script's turn `index`)."""
        content: list[dict[str, Any]] = []
        if isinstance(turn, Say):
            content.append({"type": "text", "text": turn.text})
        else:
            if turn.text:
                content.append({"type": "text", "text": turn.text})
            tool_use_id = f"toolu_{next(self._tool_ids):04d}"
            if index is not None:
                with self._lock:
                    self._tool_turns[tool_use_id] = index
            content.append({"type": "tool_use", "id": tool_use_id, "name": turn.name, "input": dict(turn.input)})
        return {
            "id": f"msg_{next(self._ids):04d}", "type": "message", "role": "assistant", "model": model or self.model,
            "content": content, "stop_reason": "tool_use" if isinstance(turn, ToolUse) else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }

    @staticmethod
    def events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The server-sent events that stream `message`."""
        start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
        yield "message_start", {"type": "message_start", "message": start}
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield "content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "text", "text": ""}}
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "text_delta", "text": block["text"]}}
            else:
                yield "content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {**block, "input": {}}}
                raw = json.dumps(block["input"])
                for piece in (raw[: len(raw) // 2], raw[len(raw) // 2:]):  # as the API does: in pieces
                    yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "input_json_delta", "partial_json": piece}}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield "message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                "usage": {"output_tokens": message["usage"]["output_tokens"]}}
        yield "message_stop", {"type": "message_stop"}


class _Handler(BaseHTTPRequestHandler):
    owner: ModelServer
    protocol_version = "HTTP/1.1"  # the CLI keeps its connection alive between turns

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are recorded, not printed

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _handle(self) -> None:
        body = read_body(self)
        owner = self.owner
        path = self.path.split("?", 1)[0].rstrip("/")
        messages = self.command == "POST" and path == "/v1/messages" and isinstance(body, dict)
        index, turn = owner._answer(body) if messages else (None, None)
        with owner._lock:
            owner.requests.append(Request(self.command, self.path, dict(self.headers.items()), body, index))
        if turn is not None:
            message = owner.message(turn, body.get("model"), index)
            if body.get("stream"):
                stream = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in owner.events(message))
                self._send(200, stream.encode(), "text/event-stream; charset=utf-8")
            else:
                self._send(200, json.dumps(message).encode())
        elif self.command == "POST" and path == "/v1/messages/count_tokens":
            self._send(200, json.dumps({"input_tokens": max(1, len(json.dumps(body)) // 4)}).encode())
        elif self.command in ("HEAD", "GET") and path == "":
            self._send(200, b"{}")
        else:
            error = {"type": "error", "error": {"type": "not_found_error", "message": f"model_server: no {path}"}}
            self._send(404, json.dumps(error).encode())

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _handle
