"""A real HTTP server that gives canned answers: what a proxy, a newer server or a broken one
would send the client, over a real socket.

Each request is answered from ``answer(method, target, headers, body)``: a :class:`Canned`
answer, whose body is sent in the chunks given (``Transfer-Encoding: chunked``, as uvicorn
streams), each after ``before_each(i)`` returns. The requests received are kept in
``CannedServer.requests``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Canned:
    status: int
    chunks: Sequence[bytes] = ()
    content_type: str = "application/json"
    before_each: Callable[[int], None] = lambda i: None
    # close the connection after answering, saying so ("Connection: close")
    close: bool = False
    # close it after answering without saying so (as a server's idle timeout does)
    drop: bool = False


@dataclass(frozen=True)
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CannedServer:
    url: str
    requests: list[Received] = field(default_factory=list)
    # connections the server accepted
    connections: int = 0


Answer = Callable[[Received], Canned]


@contextmanager
def canned_server(answer: Answer | Canned) -> Iterator[CannedServer]:
    """A server on a free local port until the block ends."""
    reply: Answer = answer if callable(answer) else (lambda _: answer)
    server_state = CannedServer(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            server_state.connections += 1

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = Received(
                self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
            )
            server_state.requests.append(received)
            canned = reply(received)
            self.send_response(canned.status)
            self.send_header("Content-Type", canned.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            if canned.close:
                self.send_header("Connection", "close")
            self.close_connection = canned.close or canned.drop
            self.end_headers()
            for i, chunk in enumerate(canned.chunks):
                canned.before_each(i)
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):  # what do_<METHOD> handles
        setattr(Handler, f"do_{method}", Handler._answer)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that left early
                super().handle_error(request, client_address)  # type: ignore[arg-type]

    server = Server(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
