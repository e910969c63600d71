"""What a client can cost or learn from the server beyond its own data: a request without a
live key is refused before its body is read (measured on a real ``memos serve`` process's
resident memory), an upload is capped as it arrives and spooled off the heap, ``/metrics``
counts only what the caller may read, and no error names a path on the server."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servers import serve_process
from fastapi.testclient import TestClient
from memos.api import ServerSettings, create_app

from memos import HashEmbedder, MemOS
from memos.llm import LocalModel

MiB = 1024 * 1024
# what the server's resident memory may grow by over a test's uploads (allocator slack, a
# worker thread's stack); the uploads themselves are hundreds of MiB
RSS_SLACK = 16 * MiB
ADAPTER_IMPORT = "/v1/cubes/notes/adapters/copy/import"


@dataclass
class Served:
    url: str
    pid: int
    alice: dict[str, str]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("served") / "data"
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        _, token = mos.keys.create("alice")
        mos.as_principal("alice").create_cube("notes")
    with serve_process("--data-dir", str(data_dir)) as (url, process):
        yield Served(url, process.pid, _bearer(token))


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Upload:
    """``size`` bytes sent in chunks as the client's request body, counting what was taken."""

    def __init__(self, size: int, chunk: bytes = b"\0" * MiB) -> None:
        self.size, self.chunk, self.sent = size, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.size:
            piece = self.chunk[: self.size - self.sent]
            self.sent += len(piece)
            yield piece


def _post(
    served: Served, path: str, upload: Upload, headers: dict[str, str], *, declared: bool = False
) -> httpx.Response:
    """POST the upload on a fresh connection (chunked, or with its length declared)."""
    length = {"Content-Length": str(upload.size)} if declared else {}
    with httpx.Client(base_url=served.url, timeout=60) as client:
        return client.post(path, content=upload, headers={**headers, **length})


def _assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body


def _warm(served: Served) -> None:
    """One request of each kind the measured ones make, so that what the server loads or
    starts once (modules, worker threads) is not counted against them."""
    for path in ("/v1/cubes/import", "/v1/cubes/notes/memories", ADAPTER_IMPORT):
        _post(served, path, Upload(2 * MiB), {})
    # an adapter upload to a cube the caller cannot see is refused before it is read (a
    # readable one would load the model)
    absent = _post(served, "/v1/cubes/absent/adapters/copy/import", Upload(2 * MiB), served.alice)
    _assert_envelope(absent, 404, "cube_not_found")
    for path in ("/v1/cubes/import", "/v1/cubes/notes/memories"):
        _post(served, path, Upload(2 * MiB), served.alice)


def test_uploads_without_a_live_key_are_refused_unread(served: Served) -> None:
    _warm(served)
    before = _rss(served.pid)
    keys = [{}, _bearer("memos_000000000000_" + "A" * 43)]
    paths = ["/v1/cubes/import", "/v1/cubes", ADAPTER_IMPORT, "/v1/cubes/notes/memories"]
    for n, path in enumerate(paths):
        upload = Upload(200 * MiB)
        response = _post(served, path, upload, keys[n % 2], declared=n >= 2)
        _assert_envelope(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"
        # the rest of the upload is not drained: the connection is closed after the answer,
        # and the client stopped once the socket buffers were full
        assert response.headers["connection"] == "close"
        assert upload.sent < upload.size // 4, (path, upload.sent)
    assert _rss(served.pid) - before <= RSS_SLACK


def test_an_authenticated_upload_is_capped_and_spooled_off_the_heap(served: Served) -> None:
    _warm(served)
    before = _rss(served.pid)
    declared = _post(served, "/v1/cubes/import", Upload(300 * MiB), served.alice, declared=True)
    assert _assert_envelope(declared, 413, "request_too_large")["error"]["details"] == {
        "limit": 256 * MiB
    }
    json_route = Upload(200 * MiB, b"x" * MiB)
    chunked = _post(served, "/v1/cubes/notes/memories", json_route, served.alice)
    _assert_envelope(chunked, 413, "request_too_large")
    assert chunked.headers["connection"] == "close"
    assert json_route.sent < json_route.size // 4
    # under the import limit, read whole: into a file, not the heap (zeros: an empty tar)
    spooled = _post(served, "/v1/cubes/import", Upload(64 * MiB), served.alice)
    _assert_envelope(spooled, 422, "invalid_input")
    assert _rss(served.pid) - before <= RSS_SLACK


# in process: small limits, two tenants -------------------------------------------------------


@dataclass
class Tenants:
    client: TestClient
    mos: MemOS
    alice: dict[str, str]
    bob: dict[str, str]


@pytest.fixture
def tenants(data_dir: Path) -> Iterator[Tenants]:
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64))
    settings = ServerSettings(store=f"sqlite:///{data_dir}", max_import_bytes=64 * 1024)
    alice, bob = (_bearer(mos.keys.create(p)[1]) for p in ("alice", "bob"))
    with TestClient(create_app(settings, mos=mos)) as client:
        yield Tenants(client, mos, alice, bob)


def test_a_chunked_upload_over_the_import_limit_is_refused_as_it_arrives(
    tenants: Tenants,
) -> None:
    client, mos, alice = tenants.client, tenants.mos, tenants.alice
    made = client.post("/v1/cubes", json={"name": "notes"}, headers=alice)
    assert made.status_code == 201
    before = mos.log(made.json()["name"])
    for path in ("/v1/cubes/import", ADAPTER_IMPORT):
        upload = Upload(1 * MiB, b"\0" * 4096)
        response = client.post(path, content=upload, headers=alice)
        assert response.status_code == 413, response.text
        assert response.json()["error"] == {
            "code": "request_too_large",
            "message": "the request body is over the server's limit of 65536 bytes",
            "details": {"limit": 65536},
        }
    assert [info.name for info in mos.list_cubes()] == ["alice:notes"]
    assert mos.log("alice:notes") == before


def _metric(text: str, name: str, label: str) -> float:
    prefix = f"{name}{{{label}}} "
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_metrics_count_only_the_cubes_the_caller_may_read(tenants: Tenants) -> None:
    client, alice, bob = tenants.client, tenants.alice, tenants.bob
    for headers, cube, texts in ((alice, "diary", 3), (bob, "ledger", 1)):
        assert client.post("/v1/cubes", json={"name": cube}, headers=headers).status_code == 201
        records = [{"text": f"{cube} entry {n}"} for n in range(texts)]
        added = client.post(
            f"/v1/cubes/{cube}/memories/batch", json={"records": records}, headers=headers
        )
        assert added.status_code == 201, added.text
    job = {"kind": "reencode", "params": {"codec": "fp16"}}
    assert client.post("/v1/cubes/diary/jobs", json=job, headers=alice).status_code == 202

    def seen(headers: dict[str, str]) -> tuple[float, float]:
        text = client.get("/metrics", headers=headers).text
        return (
            _metric(text, "memos_items", 'tier="plaintext"'),
            _metric(text, "memos_queue_depth", 'state="queued"'),
        )

    assert seen(alice) == (3, 1)
    assert seen(bob) == (1, 0)
    grant = {"principal": "bob", "access": "read"}
    assert client.post("/v1/cubes/diary/grants", json=grant, headers=alice).status_code == 200
    assert seen(bob) == (4, 1)
    assert seen(alice) == (3, 1)
    assert client.get("/metrics").status_code == 401


# no server path in any error ------------------------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_malformed_import_names_no_server_path(
    data_dir: Path, tiny_model: LocalModel, tmp_path: Path
) -> None:
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64), model=tiny_model)
    alice = _bearer(mos.keys.create("alice")[1])
    notes = mos.as_principal("alice").create_cube("notes").name
    exported = mos.export_cube(notes, tmp_path / "export")
    manifest = (exported / "manifest.json").read_bytes()
    uploads = {
        "/v1/cubes/import": [
            _tar({}),
            _tar({"manifest.json": manifest}),
            _tar({"manifest.json": b"{not json"}),
            _tar({"events.jsonl": b"{}", "manifest.json": manifest}),
            _tar({"../escape.json": b"{}"}),
            b"not a tar at all",
        ],
        ADAPTER_IMPORT: [
            _tar({}),
            _tar({"adapter_config.json": b"{}"}),
            _tar({"adapter_config.json": b"{}", "adapter_model.safetensors": b"junk"}),
        ],
    }
    settings = ServerSettings(store=f"sqlite:///{data_dir}")
    with TestClient(create_app(settings, mos=mos)) as client:
        for path, bodies in uploads.items():
            for body in bodies:
                response = client.post(path, content=body, headers=alice)
                assert 400 <= response.status_code < 500, response.text
                assert response.json()["error"]["message"]
                for server_path in ("/tmp", str(data_dir), str(tmp_path)):
                    assert server_path not in response.text, (path, response.text)


def test_an_unexpected_failure_is_the_envelope_and_names_nothing_internal(
    data_dir: Path,
) -> None:
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64))
    app = create_app(ServerSettings(store=f"sqlite:///{data_dir}"), mos=mos)

    def failing() -> None:
        raise RuntimeError(f"a bug that knows {data_dir}")

    app.add_api_route("/v1/failing", failing)
    headers = _bearer(mos.keys.create("alice")[1])
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/failing", headers=headers)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal"
    assert str(data_dir) not in answer.text
    assert "RuntimeError" not in answer.text


def test_an_error_names_none_of_the_servers_folders(tmp_path: Path) -> None:
    data_dir, model_dir = tmp_path / "data", tmp_path / "models" / "missing"
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64), model=model_dir)
    settings = ServerSettings(store=f"sqlite:///{data_dir}", model=str(model_dir))
    headers = _bearer(mos.keys.create("alice")[1])
    with TestClient(create_app(settings, mos=mos)) as client:
        client.post("/v1/cubes", json={"name": "notes"}, headers=headers)
        client.post("/v1/cubes/notes/memories", json={"text": "a memory"}, headers=headers)
        answer = client.post("/v1/cubes/notes/chat", json={"query": "what?"}, headers=headers)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "model_unavailable"
    assert "<model>" in answer.text
    assert str(tmp_path) not in answer.text
