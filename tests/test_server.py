"""The server (memos.api) in process: authentication on every route, tenant isolation tried on
every route with another tenant's cube names and item ids, input limits, the one error envelope,
metrics and the published OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from memos.api import ServerSettings, create_app

from memos import HashEmbedder, MemOS

LIMITS = {"max_body_bytes": 64 * 1024, "max_text_chars": 2_000, "max_batch": 10, "max_k": 20}


@dataclass
class Server:
    client: TestClient
    mos: MemOS
    alice: dict[str, str]
    bob: dict[str, str]
    item: str
    job: str


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64))
    settings = ServerSettings(store=f"sqlite:///{data_dir}", **LIMITS)
    alice, bob = (_bearer(mos.keys.create(p)[1]) for p in ("alice", "bob"))
    with TestClient(create_app(settings, mos=mos)) as client:
        assert client.post("/v1/cubes", json={"name": "diary"}, headers=alice).status_code == 201
        added = client.post(
            "/v1/cubes/diary/memories", json={"text": "the key is under the mat"}, headers=alice
        )
        queued = client.post(
            "/v1/cubes/diary/jobs", json=BODIES[("POST", "/v1/cubes/{cube}/jobs")], headers=alice
        )
        yield Server(client, mos, alice, bob, added.json()["id"], queued.json()["id"])


def _routes(server: Server) -> list[tuple[str, str]]:
    """Every (method, path) the published OpenAPI document lists."""
    paths = server.client.get("/openapi.json").json()["paths"]
    return sorted((method.upper(), path) for path, ops in paths.items() for method in ops)


# a valid body for every route that takes one, so a refusal is about access, not shape
DIARY = "alice:diary"  # alice's cube "diary" by its full name, as the operator and bob name it
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/cubes"): {"name": "diary"},
    ("POST", "/v1/chat/completions"): {
        "model": f"memos:{DIARY}",
        "messages": [{"role": "user", "content": "where is the key?"}],
    },
    ("POST", "/v1/cubes/{cube}/grants"): {"principal": "bob", "access": "write"},
    ("POST", "/v1/cubes/{cube}/rollback"): {"to_seq": 1},
    ("POST", "/v1/cubes/{cube}/refit"): {},
    ("POST", "/v1/cubes/{cube}/reencode"): {"codec": "fp16"},
    ("POST", "/v1/cubes/{cube}/memories"): {"text": "bob was here"},
    ("POST", "/v1/cubes/{cube}/memories/batch"): {"records": [{"text": "bob was here"}]},
    ("POST", "/v1/cubes/{cube}/search"): {"query": "key"},
    ("POST", "/v1/forget"): {"cube": DIARY, "where": {"any": "thing"}},
    ("PUT", "/v1/cubes/{cube}/policies"): {"policies": {}},
    ("PATCH", "/v1/memories/{item_id}"): {"text": "bob was here"},
    ("POST", "/v1/memories/{item_id}/rollback"): {"to_version": 1},
    ("POST", "/v1/cubes/{cube}/chat"): {"query": "where is the key?"},
    ("POST", "/v1/cubes/{cube}/chat/stream"): {"query": "where is the key?"},
    ("POST", "/v1/cubes/{cube}/kv"): {"query": "key"},
    ("POST", "/v1/cubes/{cube}/adapters"): {"name": "stolen", "query": "key"},
    ("POST", "/v1/cubes/{cube}/adapters/{name}/retrain"): {},
    ("POST", "/v1/cubes/{cube}/adapters/{name}/rollback"): {"to_version": 1},
    ("POST", "/v1/cubes/{cube}/adapters/attach"): {"name": "facts"},
    ("POST", "/v1/access-stats"): {"item_ids": []},
    ("POST", "/v1/cubes/{cube}/jobs"): {"kind": "reencode", "params": {"codec": "fp16"}},
}
QUERIES = {"/v1/memories/{item_id}/diff": {"from_version": 1, "to_version": 1}}
OPEN_ROUTES = {("GET", "/healthz")}
# routes that name no cube: they answer what the caller may see, not 404
# routes that name no cube: another tenant's call answers, with nothing of alice's in it
CUBELESS_ROUTES = (
    "/v1/cubes", "/v1/access-stats", "/v1/jobs", "/metrics", "/v1/blobs/collect", "/v1/models",
)  # fmt: skip


def _call(server: Server, method: str, path: str, headers: dict[str, str]) -> Any:
    concrete = path.format(
        cube=DIARY,
        item_id=server.item,
        name="facts",
        entry_id="kv-x",
        principal="carol",
        job_id=server.job,
        seq=1,
    )
    body = BODIES.get((method, path))
    if path.endswith("/import"):  # a tar upload: an empty one
        return server.client.request(method, concrete, content=b"", headers=headers)
    return server.client.request(
        method, concrete, json=body, params=QUERIES.get(path), headers=headers
    )


def _log(server: Server) -> list[tuple[int, str]]:
    return [(e.seq, e.hash) for e in server.mos.log(DIARY)]


def test_every_route_but_healthz_needs_a_valid_key(server: Server) -> None:
    routes = [r for r in _routes(server) if r not in OPEN_ROUTES]
    assert len(routes) > 30
    keys: list[dict[str, str]] = [{}, _bearer("memos_000000000000_" + "A" * 43), {"X": "y"}]
    revoked, token = server.mos.keys.create("alice")
    server.mos.keys.revoke(revoked.id)
    keys.append(_bearer(token))
    for method, path in [*routes, ("GET", "/metrics")]:
        for headers in keys:
            response = _call(server, method, path, headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers["www-authenticate"] == "Bearer"


def test_another_tenant_gets_not_found_or_denied_on_every_route(server: Server) -> None:
    before = _log(server)
    for method, path in _routes(server):
        if (method, path) in OPEN_ROUTES or path in CUBELESS_ROUTES:
            continue
        response = _call(server, method, path, server.bob)
        expected = 422 if path == "/v1/cubes/import" else 404  # an empty archive
        assert response.status_code == expected, (method, path, response.text)
        assert "the key is under the mat" not in response.text
    # the cube-less routes show bob nothing of alice's
    assert server.client.get("/v1/cubes", headers=server.bob).json() == []
    assert server.client.get("/v1/jobs", headers=server.bob).json() == []
    assert [j["id"] for j in server.client.get("/v1/jobs", headers=server.alice).json()] == [
        server.job
    ]
    stats = server.client.post(
        "/v1/access-stats", json={"item_ids": [server.item]}, headers=server.bob
    )
    assert stats.json() == {}
    forgot = server.client.post("/v1/forget", json={"where": {"a": 1}}, headers=server.bob)
    assert forgot.json()["cubes"] == []  # erases only in the caller's own cubes
    collected = server.client.post("/v1/blobs/collect", json={}, headers=server.bob)
    assert collected.status_code == 403  # the operator's alone
    assert _log(server) == before


def test_a_read_grant_reads_and_is_denied_writes(server: Server) -> None:
    grant = {"principal": "bob", "access": "read"}
    assert server.client.post("/v1/cubes/diary/grants", json=grant, headers=server.alice).is_success
    before = _log(server)
    read = server.client.get(f"/v1/memories/{server.item}", headers=server.bob)
    assert read.json()["text"] == "the key is under the mat"
    for method, path in [
        ("POST", "/v1/cubes/{cube}/memories"),
        ("PATCH", "/v1/memories/{item_id}"),
        ("DELETE", "/v1/memories/{item_id}"),
        ("POST", "/v1/cubes/{cube}/rollback"),
        ("POST", "/v1/cubes/{cube}/grants"),
    ]:
        response = _call(server, method, path, server.bob)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "access_denied"
    assert _log(server) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/cubes/diary/memories", {"text": "x" * 2_001}, 413, "text_too_long"),
        ("POST", "/v1/cubes/diary/search", {"query": "key", "k": 21}, 422, "invalid_input"),
        ("POST", "/v1/cubes/diary/search", {"query": "key", "k": 0}, 422, "invalid_input"),
        ("POST", "/v1/cubes/diary/memories/batch", {"records": [{"text": "a"}] * 11}, 422,
         "invalid_input"),
        ("POST", "/v1/cubes/diary/chat", {"query": "q", "max_new_tokens": 10**6}, 422,
         "invalid_input"),
        ("POST", "/v1/cubes/diary/memories", {"text": "a", "colour": "red"}, 422,
         "invalid_input"),
        ("POST", "/v1/cubes/diary/memories", ["not", "an", "object"], 422, "invalid_input"),
        ("GET", "/v1/nowhere", None, 404, "not_found"),
        ("PUT", "/v1/cubes/diary", None, 405, "method_not_allowed"),
    ],
)  # fmt: skip
def test_bad_requests_get_the_envelope_and_change_nothing(
    server: Server, method: str, path: str, body: Any, status: int, code: str
) -> None:
    before = _log(server)
    response = server.client.request(method, path, json=body, headers=server.alice)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert response.json()["error"]["code"] == code
    assert _log(server) == before


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: Server) -> None:
    before = _log(server)
    big = {"text": "a", "metadata": {"blob": "x" * (LIMITS["max_body_bytes"] + 1)}}
    response = server.client.post("/v1/cubes/diary/memories", json=big, headers=server.alice)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"text": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    streamed = server.client.post(
        "/v1/cubes/diary/memories",
        content=chunks(),
        headers={**server.alice, "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert _log(server) == before


def test_export_and_import_round_trip_over_http(server: Server, tmp_path: Path) -> None:
    exported = server.client.get("/v1/cubes/diary/export", headers=server.alice)
    assert exported.headers["content-type"] == "application/x-tar"
    other = MemOS.open(tmp_path / "other", embedder=HashEmbedder(64))
    settings = ServerSettings(store=f"sqlite:///{tmp_path / 'other'}")
    token = _bearer(other.keys.create("alice")[1])
    with TestClient(create_app(settings, mos=other)) as client:
        imported = client.post("/v1/cubes/import", content=exported.content, headers=token)
        assert imported.status_code == 201, imported.text
        log = client.get("/v1/cubes/diary/log", headers=token).json()
        assert [e["hash"] for e in log] == [h for _, h in _log(server)]
        assert client.get("/v1/cubes/diary/verify", headers=token).json()["ok"] is True
        again = client.post("/v1/cubes/import", content=exported.content, headers=token)
        assert again.json()["error"]["code"] == "cube_exists"
        junk = client.post("/v1/cubes/import", content=b"not a tar", headers=token)
        assert junk.json()["error"]["code"] == "tampered_export"


def test_metrics_count_requests_and_items_per_tier(server: Server) -> None:
    server.client.post("/v1/cubes/diary/search", json={"query": "key"}, headers=server.alice)
    text = server.client.get("/metrics", headers=server.alice).text
    assert 'memos_items{tier="plaintext"} 1.0' in text
    assert 'memos_items{tier="activation"} 0.0' in text
    assert 'memos_queue_depth{state="queued"} 1.0' in text  # the fixture's job
    assert 'memos_queue_depth{state="running"} 0.0' in text
    assert 'route="/v1/cubes/{cube}/search",status="200"' in text
    assert server.item not in text  # labels are route templates, never ids


def test_openapi_is_published_and_healthz_is_open(server: Server) -> None:
    spec = server.client.get("/openapi.json").json()
    assert "/v1/cubes/{cube}/search" in spec["paths"]
    assert server.client.get("/healthz").json()["status"] == "ok"
