"""A local Lambda Runtime API, enough for AWS's runtime interface client (`awslambdaric`).

`python -m awslambdaric module.handler` with `AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT` long-polls
`GET /2018-06-01/runtime/invocation/next`, runs the handler, and posts the answer to
`.../invocation/<id>/response` or `.../error` (an import failure goes to `/runtime/init/error`).
`invoke(payload)` queues one invocation and waits for that answer.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:s3tasks-test"


@dataclass(frozen=True)
class Answer:
    """What the function posted for one invocation: `kind` is "response" or "error"."""

    kind: str
    body: Any

    @property
    def ok(self) -> bool:
        return self.kind == "response"


class FakeRuntimeAPI:
    """The Runtime API served on 127.0.0.1 from a background thread."""

    def __init__(self, timeout_ms: int = 60_000) -> None:
        self.timeout_ms = timeout_ms
        self.pending: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.answers: dict[str, queue.Queue[Answer]] = {}
        self.init_errors: list[Any] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def invoke(self, payload: Any, *, timeout: float = 60) -> Answer:
        """Hand `payload` to the function and wait for its response or error."""
        request_id = str(uuid.uuid4())
        self.answers[request_id] = queue.Queue(maxsize=1)
        self.pending.put((request_id, json.dumps(payload).encode("utf-8")))
        try:
            return self.answers[request_id].get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no answer to invocation {request_id} within {timeout} s "
                f"(init errors: {self.init_errors})"
            ) from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- called from the request handler --------------------------------------------------

    def next_invocation(self) -> tuple[str, bytes]:
        return self.pending.get()

    def answer(self, request_id: str, kind: str, body: Any) -> bool:
        waiting = self.answers.get(request_id)
        if waiting is None:
            return False
        waiting.put(Answer(kind, body))
        return True


def _handler_class(api: FakeRuntimeAPI) -> type[BaseHTTPRequestHandler]:
    class RuntimeHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            if self.path != f"{PREFIX}/invocation/next":
                return self._reply(404, {"errorMessage": f"unknown path {self.path}"})
            request_id, body = api.next_invocation()
            deadline = int(time.time() * 1000) + api.timeout_ms
            self.send_response(200)
            # awslambdaric crashes silently without a JSON content type (FACTS.md).
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
            self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
            self.send_header("Lambda-Runtime-Trace-Id", f"Root=1-{request_id[:8]}")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            if self.path == f"{PREFIX}/init/error":
                api.init_errors.append(body)
                return self._reply(202, {"status": "OK"})
            parts = self.path.removeprefix(f"{PREFIX}/invocation/").split("/")
            if len(parts) == 2 and parts[1] in ("response", "error"):
                if api.answer(parts[0], parts[1], body):
                    return self._reply(202, {"status": "OK"})
            return self._reply(404, {"errorMessage": f"unknown path {self.path}"})

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return RuntimeHandler
