"""A scripted model on loopback for the real agent CLIs (Claude Code, Codex, Aider): no network, no key.

It speaks the wire formats those CLIs call, as the real services send them:
- Anthropic Messages API, `POST /v1/messages` (Claude Code), streaming (SSE: message_start,
  content_block_start/delta/stop, message_delta with the output usage, message_stop) and not;
- OpenAI Responses API, `POST /v1/responses` (Codex), streaming (response.created,
  response.output_item.added/done, response.output_text.delta, response.completed with usage);
- OpenAI Chat Completions, `POST /v1/chat/completions` (Aider through litellm), streaming (chunks,
  a usage chunk when `stream_options.include_usage`, `data: [DONE]`) and not.

It plays one scripted conversation, the same for every dialect: read a file, write a change, run a
command, answer. Which step a request is at is read from the request itself (how many of the script's
tool results it carries), so an agent's retries and side requests (titles, quota probes, commit
messages) neither skip nor repeat a step. Every request is checked: the model, the auth header, and
that each tool result the agent sends back shows the tool really ran (the file's text, the command's
output). What is wrong lands in `violations`; a test asserts that list is empty, so an agent that
misbehaves fails its test. Usage figures are deterministic per request and summed per model in
`usage`, so a test can compare them with what the runner recorded.
"""

import dataclasses
import http.server
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

# The scripted conversation's files and texts (tests check the pushed branch against these).
READ_FILE = "README.md"
READ_TEXT = "hello from the repository"  # README.md's text: what the read step's result must contain
WRITE_FILE = "greeting.txt"
WRITE_TEXT = "Hello from the scripted model\n"
RUN_COMMAND = "ls"
RUN_EXPECT = WRITE_FILE  # the command runs after the write: its output lists the new file
ANSWER = "Done: greeting.txt holds the greeting."


@dataclasses.dataclass
class Request:
    """One request the server answered, as recorded for a test to inspect."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    step: int | None  # the script step answered; None for a side request


class ModelServer:
    """A threaded HTTP server on 127.0.0.1; `with ModelServer(key=...) as server:` runs it."""

    def __init__(self, *, key: str, models: set[str] | None = None) -> None:
        self.key = key
        self.models = models  # None: any model name; else a request for another model is a violation
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.usage: dict[str, dict[str, int]] = {}  # model → {"input": n, "output": n, "requests": n}
        self.answered = False  # the final answer was sent
        # Faults for the next requests, in order: ("status", code, error body) answers with that error as
        # the real API would; ("cut", n) streams the first n events of the answer, then drops the connection.
        self.faults: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "ModelServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- bookkeeping ---------------------------------------------------------------------------

    def violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def charge(self, model: str, body: dict[str, Any]) -> tuple[int, int]:
        """Deterministic usage for one answer: input grows with the request, output is fixed per call."""
        size = len(json.dumps(body.get("messages") or body.get("input") or ""))
        usage = (100 + size // 40, 20)
        with self._lock:
            totals = self.usage.setdefault(model, {"input": 0, "output": 0, "requests": 0})
            totals["input"] += usage[0]
            totals["output"] += usage[1]
            totals["requests"] += 1
        return usage

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_gf{next(self._ids):04d}"

    def check_common(self, model: str, authorized: bool, api: str) -> None:
        if not authorized:
            self.violation(f"{api}: a request without the expected key")
        if self.models is not None and model not in self.models:
            self.violation(f"{api}: model {model!r} is not one of {sorted(self.models)}")

    def check_result(self, step: int, text: str, *, error: bool = False) -> None:
        """A tool result of the script's step must show the tool ran: the file's text, the command's output."""
        expect = {0: READ_TEXT, 2: RUN_EXPECT}.get(step)
        if error:
            self.violation(f"step {step}: the agent reported its tool failed: {text[:300]!r}")
        elif expect is not None and expect not in text:
            self.violation(f"step {step}: the tool result lacks {expect!r}: {text[:300]!r}")


STEPS = 4  # read, write, run, answer


# -- the Anthropic Messages API -------------------------------------------------------------------

def _anthropic_blocks(step: int, cwd: str | None, call_id: str) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and stop reason of the script's step, as Claude Code's tools take them."""
    def path(name: str) -> str:
        return f"{cwd.rstrip('/')}/{name}" if cwd else name

    if step == 0:
        tool = {"name": "Read", "input": {"file_path": path(READ_FILE)}}
    elif step == 1:
        tool = {"name": "Write", "input": {"file_path": path(WRITE_FILE), "content": WRITE_TEXT}}
    elif step == 2:
        tool = {"name": "Bash", "input": {"command": RUN_COMMAND, "description": "List the files"}}
    else:
        return [{"type": "text", "text": ANSWER}], "end_turn"
    return [{"type": "text", "text": f"Step {step + 1}."}, {"type": "tool_use", "id": call_id, **tool}], "tool_use"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(part.get("text", part.get("content", ""))) if isinstance(part, dict) else str(part)
                         for part in content)
    return str(content)


def anthropic(server: ModelServer, headers: dict[str, str], body: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The scripted answer to a Messages request (and the step it answers, None for a side request)."""
    model = str(body.get("model"))
    server.check_common(model, headers.get("x-api-key") == server.key
                        or headers.get("authorization") == f"Bearer {server.key}", "messages")
    tools = {tool.get("name") for tool in body.get("tools") or []}
    main = {"Read", "Write", "Bash"} <= tools
    step = None
    if main:
        results = [block for message in body.get("messages") or [] if isinstance(message.get("content"), list)
                   for block in message["content"]
                   if block.get("type") == "tool_result" and str(block.get("tool_use_id", "")).startswith("toolu_gf")]
        step = min(len(results), STEPS - 1)
        for index, block in enumerate(results[:STEPS - 1]):
            server.check_result(index, _text_of(block.get("content")), error=bool(block.get("is_error")))
        system = _text_of(body.get("system") or "")
        found = re.search(r"Working directory: (\S+)", system)
        content, stop = _anthropic_blocks(step, found.group(1) if found else None, server.next_id("toolu"))
    else:
        content, stop = [{"type": "text", "text": "Scripted side answer."}], "end_turn"
    usage_in, usage_out = server.charge(model, body)
    message = {"id": server.next_id("msg"), "type": "message", "role": "assistant", "model": model,
               "content": content, "stop_reason": stop, "stop_sequence": None,
               "usage": {"input_tokens": usage_in, "output_tokens": usage_out,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    if step == STEPS - 1:
        server.answered = True
    return message, step


def anthropic_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A message as the Messages API streams it: output tokens arrive in message_delta."""
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            text = block["text"]
            for cut in range(0, len(text), 16):
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "text_delta", "text": text[cut:cut + 16]}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": {**block, "input": {}}}
            partial = json.dumps(block["input"])
            for cut in range(0, len(partial), 32):
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "input_json_delta", "partial_json": partial[cut:cut + 32]}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


# -- the OpenAI Responses API (Codex) ---------------------------------------------------------------

def _codex_call(step: int, tools: dict[str, dict[str, Any]], call_id: str) -> dict[str, Any]:
    """The script's step as a Codex tool call, in whichever shell tool this Codex offers."""
    commands = {0: f"cat {READ_FILE}", 1: f"printf '%s' '{WRITE_TEXT}' > {WRITE_FILE}", 2: RUN_COMMAND}
    command = commands[step]
    if "shell_command" in tools:
        name, arguments = "shell_command", {"command": command}
    elif "exec_command" in tools:
        name, arguments = "exec_command", {"cmd": command}
    else:
        name, arguments = "shell", {"command": ["bash", "-lc", command]}
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": json.dumps(arguments), "status": "completed"}


def responses(server: ModelServer, headers: dict[str, str], body: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    model = str(body.get("model"))
    server.check_common(model, headers.get("authorization") == f"Bearer {server.key}", "responses")
    tools = {str(tool.get("name")): tool for tool in body.get("tools") or [] if isinstance(tool, dict)}
    results = [item for item in body.get("input") or [] if isinstance(item, dict)
               and item.get("type") in ("function_call_output", "custom_tool_call_output")
               and str(item.get("call_id", "")).startswith("call_gf")]
    step = min(len(results), STEPS - 1)
    for index, item in enumerate(results[:STEPS - 1]):
        output = item.get("output")
        text = output if isinstance(output, str) else json.dumps(output)
        server.check_result(index, text)
    if step < STEPS - 1:
        output = [_codex_call(step, tools, server.next_id("call"))]
    else:
        output = [{"type": "message", "id": server.next_id("msg"), "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]}]
        server.answered = True
    usage_in, usage_out = server.charge(model, body)
    response = {"id": server.next_id("resp"), "object": "response", "created_at": int(time.time()),
                "status": "completed", "model": model, "output": output,
                "usage": {"input_tokens": usage_in, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": usage_out, "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": usage_in + usage_out}}
    return response, step


def responses_events(response: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    sequence = itertools.count()
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    yield "response.created", {"type": "response.created", "sequence_number": next(sequence), "response": pending}
    yield "response.in_progress", {"type": "response.in_progress", "sequence_number": next(sequence), "response": pending}
    for index, item in enumerate(response["output"]):
        started = {**item, "status": "in_progress"}
        if item["type"] == "message":
            started["content"] = []
        elif item["type"] == "function_call":
            started["arguments"] = ""
        yield "response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(sequence),
                                             "output_index": index, "item": started}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            yield "response.content_part.added", {"type": "response.content_part.added", "sequence_number": next(sequence),
                                                  "item_id": item["id"], "output_index": index, "content_index": 0,
                                                  "part": {"type": "output_text", "text": "", "annotations": []}}
            for cut in range(0, len(text), 16):
                yield "response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": next(sequence),
                                                     "item_id": item["id"], "output_index": index, "content_index": 0,
                                                     "delta": text[cut:cut + 16]}
            yield "response.output_text.done", {"type": "response.output_text.done", "sequence_number": next(sequence),
                                                "item_id": item["id"], "output_index": index, "content_index": 0, "text": text}
        else:
            yield "response.function_call_arguments.delta", {
                "type": "response.function_call_arguments.delta", "sequence_number": next(sequence),
                "item_id": item["id"], "output_index": index, "delta": item["arguments"]}
            yield "response.function_call_arguments.done", {
                "type": "response.function_call_arguments.done", "sequence_number": next(sequence),
                "item_id": item["id"], "output_index": index, "arguments": item["arguments"]}
        yield "response.output_item.done", {"type": "response.output_item.done", "sequence_number": next(sequence),
                                            "output_index": index, "item": item}
    yield "response.completed", {"type": "response.completed", "sequence_number": next(sequence), "response": response}


# -- the OpenAI Chat Completions API (Aider) --------------------------------------------------------

# Aider edits through text: it asks to see a file by naming it, gets the file added to the chat
# (its "tool result"), answers with an edit block that Aider applies, and a shell block that Aider
# runs. The step is how many of these the conversation already holds.
AIDER_READ = f"I need to see {READ_FILE} first.\n\n{READ_FILE}\n"
AIDER_EDIT = (f"{ANSWER}\n\n{WRITE_FILE}\n```\n<<<<<<< SEARCH\n=======\n{WRITE_TEXT}>>>>>>> REPLACE\n```\n")
COMMIT_MESSAGE = "feat: add greeting.txt"


def chat(server: ModelServer, headers: dict[str, str], body: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    model = str(body.get("model"))
    server.check_common(model, headers.get("authorization") == f"Bearer {server.key}", "chat.completions")
    messages = body.get("messages") or []
    everything = "\n".join(_text_of(m.get("content")) for m in messages)
    if "commit message" in everything.lower() and not any("SEARCH" in _text_of(m.get("content")) for m in messages
                                                           if m.get("role") == "system"):
        text, step = COMMIT_MESSAGE, None
    elif READ_TEXT in everything:  # the file is in the chat: edit
        if not any(m.get("role") == "assistant" and AIDER_READ.strip() in _text_of(m.get("content")) for m in messages):
            server.violation("chat.completions: the file was added before the model asked for it")
        text, step = AIDER_EDIT, STEPS - 1
        server.answered = True
    else:
        text, step = AIDER_READ, 0
    usage_in, usage_out = server.charge(model, body)
    completion = {"id": server.next_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                  "model": model, "system_fingerprint": None,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out, "total_tokens": usage_in + usage_out}}
    return completion, step


def chat_chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    head = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    text = completion["choices"][0]["message"]["content"]
    yield {**head, "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
    for cut in range(0, len(text), 16):
        yield {**head, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": text[cut:cut + 16]}, "logprobs": None, "finish_reason": None}]}
    yield {**head, "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    if include_usage:
        yield {**head, "object": "chat.completion.chunk", "choices": [], "usage": completion["usage"]}


# -- HTTP -----------------------------------------------------------------------------------------

MAX_BODY = 32 * 1024 * 1024


def _handler(server: ModelServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads `requests`
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [], "models": []})
            else:
                self._json(404, {"error": {"type": "not_found_error", "message": f"no {path} here"}})

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._json(413, {"error": {"type": "request_too_large", "message": "too large"}})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._json(400, {"error": {"type": "invalid_request_error", "message": "not JSON"}})
                return
            headers = {key.lower(): value for key, value in self.headers.items()}
            stream = bool(body.get("stream"))
            if path.endswith("/messages/count_tokens"):
                self._record(path, headers, body, None)
                self._json(200, {"input_tokens": 100})
            elif server.faults and server.faults[0][0] == "status":
                _, code, error = server.faults.pop(0)
                self._record(path, headers, body, None)
                self._json(code, error)
            elif path.endswith("/messages"):
                message, step = anthropic(server, headers, body)
                self._record(path, headers, body, step)
                if stream:
                    self._sse((f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in anthropic_events(message)))
                else:
                    self._json(200, message)
            elif path.endswith("/responses"):
                response, step = responses(server, headers, body)
                self._record(path, headers, body, step)
                if stream:
                    self._sse((f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in responses_events(response)))
                else:
                    self._json(200, response)
            elif path.endswith("/chat/completions"):
                completion, step = chat(server, headers, body)
                self._record(path, headers, body, step)
                if stream:
                    usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    chunks = (f"data: {json.dumps(chunk)}\n\n" for chunk in chat_chunks(completion, usage))
                    self._sse(itertools.chain(chunks, ["data: [DONE]\n\n"]))
                else:
                    self._json(200, completion)
            else:
                self._record(path, headers, body, None)
                server.violation(f"POST {path}: not an API the agents should call")
                self._json(404, {"error": {"type": "not_found_error", "message": f"no {path} here"}})

        def _record(self, path: str, headers: dict[str, str], body: dict[str, Any], step: int | None) -> None:
            with server._lock:
                server.requests.append(Request(path=path, headers=headers, body=body, step=step))

        def _json(self, code: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _sse(self, events: Iterator[str]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")  # as the real APIs stream: an end a cut cannot fake
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            cut = server.faults.pop(0)[1] if server.faults and server.faults[0][0] == "cut" else None
            for index, event in enumerate(events):
                if cut is not None and index >= cut:
                    return  # the connection closes mid-stream: no last chunk, no message_stop, no [DONE]
                raw = event.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    return Handler
