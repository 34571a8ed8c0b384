"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks `POST /v1/chat/completions` as the openai SDK expects, answers with a pluggable
`responder`, and can misbehave on purpose: latency, scheduled faults (429 with Retry-After, 500,
replies slower than the client's timeout, malformed JSON, a reply trickled a byte at a time, a
reply far past max_tokens), lying usage (`negative_usage`, `inflated_usage`), and a rate limiter.
It counts what it did, the replies a client abandoned before their last byte (`abandoned`), and
records every request, headers included.

    with OpenAIServer(latency=0.05, faults=[rate_limited(0.2)]) as server:
        client = AsyncOpenAI(base_url=server.url, api_key="test")
        ...
        assert server.counts["ok"] == 1 and server.counts["429"] == 1

It also speaks the Files and Batch APIs far enough for a batch run: upload a JSONL file, create a
batch from it, retrieve the batch (it completes after `batch_polls` retrievals, answering every
line with the responder), download the output and error files.

Other endpoints are added to `server.routes`: (method, path regex) ->
handler(received, **named groups of the regex) -> (status, JSON-able payload or raw bytes).
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    """What to send instead of the normal reply; `delay` is added before anything is sent."""
    name: str  # the outcome it is counted under
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    reply: bool = False  # after the delay, send the normal reply instead of `body`
    text: str | None = None  # with `reply`: this text instead of the responder's
    pad: int = 0  # leading spaces before the body (JSON allows them)
    trickle: float = 0.0  # seconds between the body's bytes, sent one at a time (0: all at once)
    length: bool = True  # send Content-Length; False: the body ends when the connection closes


def rate_limited(retry_after: float = 0.0, ms: bool = False) -> Fault:
    header = {"retry-after-ms": str(round(retry_after * 1000))} if ms else {"retry-after": str(retry_after)}
    return Fault("429", 429, _error_body("rate limit reached", "rate_limit_exceeded"), header)


def server_error() -> Fault:
    return Fault("500", 500, _error_body("the server had an error", "server_error"))


def slow(seconds: float) -> Fault:
    """A correct reply that arrives after `seconds`: past the client's timeout, if it is shorter."""
    return Fault("slow", delay=seconds, reply=True)


def malformed() -> Fault:
    """A 200 whose JSON body stops half way."""
    return Fault("malformed", 200, b'{"id": "chatcmpl-0", "object": "chat.completion", "choices": [{"ind')


def trickle(interval: float = 0.01, pad: int = 10_000) -> Fault:
    """A 200 whose body (`pad` spaces, then the normal reply) comes one byte every `interval`
    seconds: never slow enough for a per-read timeout, and never done within a test."""
    return Fault("trickle", reply=True, pad=pad, trickle=interval)


def huge_reply(size: int = 10 * 2**20, length: bool = True) -> Fault:
    """A correct reply whose text is `size` bytes, whatever max_tokens asked; with `length` False
    the body has no Content-Length, so only counting its bytes can bound it."""
    return Fault("huge", reply=True, text="x" * size, length=length)


def negative_usage(body: dict, text: str) -> dict:
    """Usage that would credit a ledger which took it at its word."""
    return {"prompt_tokens": -10**6, "completion_tokens": -10**6, "total_tokens": -2 * 10**6}


def inflated_usage(body: dict, text: str) -> dict:
    """Usage no request could have: a billion prompt tokens, the reply's words for completion."""
    usage = word_usage(body, text)
    return {**usage, "prompt_tokens": 10**9, "total_tokens": 10**9 + usage["completion_tokens"]}


def no_choices() -> Fault:
    return Fault("no_choices", 200, json.dumps({
        "id": "chatcmpl-0", "object": "chat.completion", "created": 0, "model": "fake", "choices": [],
    }).encode())


def _error_body(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": code, "code": code, "param": None}}).encode()


def prompt_text(body: dict) -> str:
    """The text parts of the request's user turns, joined by spaces."""
    parts = []
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [part["text"] for part in content if part.get("type") == "text"]
    return " ".join(parts)


def echo(body: dict) -> str:
    return f"echo: {prompt_text(body)}"


def word_usage(body: dict, text: str) -> dict:
    """Token counts a test can predict: words of the user turns, words of the reply."""
    prompt_tokens, completion_tokens = len(prompt_text(body).split()), len(text.split())
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class Received:
    method: str
    path: str
    headers: dict  # names lower-cased
    body: bytes
    json: object  # the body parsed, or None when it is not JSON
    time: float = 0.0  # time.monotonic() on arrival, taken in arrival order
    outcome: str = ""  # what it got, once answered: "ok", "429", "rate_limited", ...
    fault: Fault | None = None  # the fault it got, if any


class OpenAIServer:
    """Serves on an ephemeral port from a background thread; use as a context manager.

    responder: request JSON -> reply text for chat completions.
    latency: seconds every request waits before its reply.
    faults: a list (the n-th request received gets faults[n]; None or past the end: normal) or a
        function (n, request JSON) -> Fault | None.
    rate_limit: (max_requests, per_seconds); a request beyond it gets 429 with the Retry-After that
        would let it through. (60 s makes it requests per minute; tests use shorter windows.)
    usage: (request JSON, reply text) -> the usage object of the reply.
    batch_polls: retrievals of a batch before it completes; batch_fails: (batch line) -> whether that
        line fails (it then goes to the error file).
    All of these are plain attributes, read per request, so a test may change them between calls.
    """

    def __init__(self, responder: Callable[[dict], str] = echo, latency: float = 0.0,
                 faults: list | Callable | None = None, rate_limit: tuple[int, float] | None = None,
                 usage: Callable[[dict, str], dict] = word_usage):
        self.responder = responder
        self.latency = latency
        self.faults = faults
        self.rate_limit = rate_limit
        self.usage = usage
        self.batch_polls = 1
        self.batch_fails: Callable[[dict], bool] = lambda line: False
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.routes: dict[tuple[str, str], Callable[..., tuple[int, object]]] = {
            ("POST", "/v1/chat/completions"): self._chat_completion,
            ("POST", "/v1/files"): self._upload,
            ("GET", r"/v1/files/(?P<file_id>[\w-]+)/content"): self._file_content,
            ("POST", "/v1/batches"): self._create_batch,
            ("GET", r"/v1/batches/(?P<batch_id>[\w-]+)"): self._retrieve_batch,
        }
        self.requests: list[Received] = []
        self.counts: collections.Counter = collections.Counter()
        self.abandoned: collections.Counter = collections.Counter()  # outcome -> replies the client left unread
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._accepted: collections.deque[float] = collections.deque()  # arrival times inside the window
        self._closing = threading.Event()  # wakes handlers that are sleeping out a delay
        self._httpd = _HTTPServer(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        """The base URL a client is given, e.g. http://127.0.0.1:PORT/v1."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _chat_completion(self, received: Received) -> tuple[int, object]:
        body = received.json
        if not isinstance(body, dict):
            return 400, _error_body("the body is not a JSON object", "invalid_request_error")
        fault = received.fault
        return 200, self._completion(body, fault.text if fault and fault.text is not None else None)

    def _completion(self, body: dict, text: str | None = None) -> dict:
        text = self.responder(body) if text is None else text
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": self.usage(body, text),
        }

    # ---- Files and Batch APIs ----

    def _upload(self, received: Received) -> tuple[int, object]:
        # The SDK sends multipart/form-data; the email parser reads it once given the header.
        head = f"Content-Type: {received.headers.get('content-type', '')}\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + received.body)
        parts = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
        if "file" not in parts:
            return 400, _error_body("no file in the upload", "invalid_request_error")
        data = parts["file"].get_payload(decode=True)
        with self._lock:
            file_id = f"file-{len(self.files)}"
            self.files[file_id] = data
        return 200, {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                     "filename": parts["file"].get_filename(), "status": "processed",
                     "purpose": parts["purpose"].get_payload(decode=True).decode() if "purpose" in parts else "batch"}

    def _file_content(self, received: Received, file_id: str) -> tuple[int, object]:
        if file_id not in self.files:
            return 404, _error_body(f"no file {file_id}", "not_found")
        return 200, self.files[file_id]

    def _create_batch(self, received: Received) -> tuple[int, object]:
        body = received.json
        if not isinstance(body, dict) or body.get("input_file_id") not in self.files:
            return 400, _error_body("input_file_id names no uploaded file", "invalid_request_error")
        lines = self.files[body["input_file_id"]].splitlines()
        with self._lock:
            batch_id = f"batch-{len(self.batches)}"
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "status": "validating",
                "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                "created_at": int(time.time()), "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "polls": 0}
            return 200, self._public(self.batches[batch_id])

    def _retrieve_batch(self, received: Received, batch_id: str) -> tuple[int, object]:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error_body(f"no batch {batch_id}", "not_found")
            batch["polls"] += 1
            if batch["status"] == "validating" and batch["polls"] >= self.batch_polls:
                self._run_batch(batch)
            return 200, self._public(batch)

    def _run_batch(self, batch: dict) -> None:
        done, failed = [], []
        for number, raw in enumerate(self.files[batch["input_file_id"]].splitlines()):
            line = json.loads(raw)
            result = {"id": f"batch_req_{number}", "custom_id": line["custom_id"], "error": None}
            if self.batch_fails(line):
                result["response"] = {"status_code": 500, "request_id": f"req_{number}",
                                      "body": json.loads(_error_body("the server had an error", "server_error"))}
                failed.append(result)
            else:
                result["response"] = {"status_code": 200, "request_id": f"req_{number}",
                                      "body": self._completion(line["body"])}
                done.append(result)
        for name, results in (("output_file_id", done), ("error_file_id", failed)):
            if results:
                file_id = f"file-{len(self.files)}"
                self.files[file_id] = b"".join(json.dumps(r).encode() + b"\n" for r in results)
                batch[name] = file_id
        batch["status"] = "completed"
        batch["request_counts"].update(completed=len(done), failed=len(failed))

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "polls"}

    def _admit(self, received: Received) -> Fault | None:
        """Record the request and decide, under the lock, whether it is faulted or rate limited."""
        with self._lock:
            received.time = time.monotonic()
            number = len(self.requests)
            self.requests.append(received)
            faults = self.faults
            if callable(faults):
                fault = faults(number, received.json)
            else:
                fault = faults[number] if faults and number < len(faults) else None
            if fault is None and self.rate_limit:
                limit, window = self.rate_limit
                while self._accepted and self._accepted[0] <= received.time - window:
                    self._accepted.popleft()
                if len(self._accepted) >= limit:
                    wait = self._accepted[0] + window - received.time
                    fault = replace(rate_limited(round(wait, 3)), name="rate_limited")
                else:
                    self._accepted.append(received.time)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            received.fault = fault
        return fault

    def _done(self, received: Received, outcome: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.counts[outcome] += 1
            received.outcome = outcome

    def _respond(self, received: Received) -> tuple[str, int, dict, bytes]:
        """(outcome, status, headers, body) for one request."""
        fault = self._admit(received)
        self._closing.wait(self.latency + (fault.delay if fault else 0.0))
        if fault and not fault.reply:
            return fault.name, fault.status, fault.headers, fault.body
        path = received.path.partition("?")[0]
        for (method, pattern), handler in self.routes.items():
            match = re.fullmatch(pattern, path)
            if method == received.method and match:
                status, payload = handler(received, **match.groupdict())
                break
        else:
            status, payload = 404, _error_body(f"no route for {received.method} {path}", "not_found")
        outcome = fault.name if fault else ("ok" if status < 400 else str(status))
        payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return outcome, status, {}, b" " * fault.pad + payload if fault else payload


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections when a client opens dozens at once


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
        # Headers and body go out in two writes; with Nagle's algorithm the body would wait for
        # the client's delayed ACK, adding ~40 ms to every reply.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            received = Received(self.command, self.path, headers, raw, parsed)
            outcome, status, headers, payload = server._respond(received)
            fault = received.fault
            try:
                self.send_response(status)
                if fault is None or fault.length:
                    headers = {"content-type": "application/json", **headers, "content-length": str(len(payload))}
                else:
                    headers = {"content-type": "application/json", **headers, "connection": "close"}
                    self.close_connection = True
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if fault is not None and fault.trickle:
                    for at in range(len(payload)):
                        if server._closing.wait(fault.trickle):
                            self.close_connection = True
                            break  # the server is shutting down
                        self.wfile.write(payload[at:at + 1])
                else:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (timed out, or would read no more) before the reply's last byte.
                with server._lock:
                    server.abandoned[outcome] += 1
            finally:
                server._done(received, outcome)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
            pass  # quiet: tests read the counters instead

    return Handler
