"""The standard-library HTTP client under :class:`memos.RemoteMemOS`
(:mod:`memos.core._http`), against real sockets: keep-alive and its pool, connections a server
closed, a base URL's path, query strings, streamed answers, timeouts and threads."""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from _canned import Canned, Received, canned_server
from _servers import free_port

from memos.core._http import Client, TransportError


def _client(url: str, timeout: float = 10.0) -> Client:
    return Client(url, headers={"Authorization": "Bearer k"}, timeout=timeout, connect_timeout=5)


def test_requests_share_one_kept_alive_connection() -> None:
    with canned_server(Canned(200, [b'{"a": 1}'])) as server:
        client = _client(server.url)
        answers = [client.request("GET", "/v1/x") for _ in range(5)]
        client.close()
    assert [a.json() for a in answers] == [{"a": 1}] * 5
    assert server.connections == 1
    assert all(r.headers["Authorization"] == "Bearer k" for r in server.requests)


@pytest.mark.parametrize(
    "canned", [Canned(200, [b"{}"], close=True), Canned(200, [b"{}"], drop=True)]
)
def test_a_connection_the_server_closed_is_not_used_again(canned: Canned) -> None:
    """Whether the server says it closes ("Connection: close") or just does (an idle
    timeout), the next request goes on a new connection instead of failing."""
    with canned_server(canned) as server:
        client = _client(server.url)
        for _ in range(3):
            assert client.request("POST", "/v1/x", content=b"{}").status == 200
            time.sleep(0.05)  # let a dropped connection's end arrive
        client.close()
    assert server.connections == 3
    assert [r.body for r in server.requests] == [b"{}"] * 3


def test_the_base_urls_path_prefixes_every_request_and_the_query_is_encoded() -> None:
    with canned_server(Canned(200, [b"{}"])) as server:
        client = _client(server.url + "/memos/")
        client.request(
            "GET",
            "/v1/cubes/a%2Fb",
            params={"flag": True, "off": False, "k": 3, "tag": ["x", "y z"], "q": "ü&="},
        )
        client.close()
    target = urlsplit(server.requests[0].target)
    assert target.path == "/memos/v1/cubes/a%2Fb"
    assert parse_qs(target.query) == {
        "flag": ["true"], "off": ["false"], "k": ["3"], "tag": ["x", "y z"], "q": ["ü&="],
    }  # fmt: skip


def test_a_streamed_answer_arrives_line_by_line_and_an_unfinished_one_is_not_reused() -> None:
    sent = threading.Event()

    def wait_for_the_first_line(i: int) -> None:
        if i == 1:
            assert sent.wait(timeout=10)

    canned = Canned(200, [b"one\r\n", b"two\nthree\n"], "text/plain", wait_for_the_first_line)
    with canned_server(canned) as server:
        client = _client(server.url)
        response = client.request("GET", "/s", stream=True)
        lines = response.iter_lines()
        assert next(lines) == "one"  # before the server sends the rest
        sent.set()
        assert list(lines) == ["two", "three"]
        client.request("GET", "/s", stream=True).close()  # dropped before its end
        client.request("GET", "/s")
        client.close()
    assert server.connections == 2  # the read one was reused, the dropped one not


def test_many_threads_share_the_pool() -> None:
    with canned_server(lambda r: Canned(200, [r.target.encode()])) as server:
        client = _client(server.url)
        failures: list[str] = []

        def work(n: int) -> None:
            for i in range(20):
                path = f"/{n}/{i}"
                if client.request("GET", path).content != path.encode():
                    failures.append(path)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
    assert failures == []
    assert len(server.requests) == 160
    assert server.connections <= 8


def test_failures_to_connect_or_read_are_transport_errors() -> None:
    with pytest.raises(TransportError, match="ConnectionRefused"):
        _client(f"http://127.0.0.1:{free_port()}").request("GET", "/")

    def slow(received: Received) -> Canned:
        return Canned(200, [b"late"], before_each=lambda i: time.sleep(1.0))

    with canned_server(slow) as server:
        with pytest.raises(TransportError, match="timed out"):
            _client(server.url, timeout=0.2).request("GET", "/")
        # https to a server that speaks plain HTTP: the TLS handshake fails
        with pytest.raises(TransportError):
            _client(server.url.replace("http:", "https:")).request("GET", "/")


def test_a_urls_user_and_password_are_basic_authentication_unless_headers_authorize() -> None:
    with canned_server(Canned(401, [b"x" * 100_000])) as server:
        with_user = server.url.replace("http://", "http://ann:p%40ss@")
        plain = Client(with_user, headers={}, timeout=10, connect_timeout=5)
        answer = plain.request("GET", "/", stream=True)
        assert answer.read_at_most(10) == b"x" * 10  # the rest is not read
        plain.close()
        bearer = _client(with_user)
        bearer.request("GET", "/")
        bearer.close()
    assert server.requests[0].headers["Authorization"] == "Basic YW5uOnBAc3M="  # ann:p@ss
    assert server.requests[1].headers["Authorization"] == "Bearer k"
