"""What an operator and a newcomer see of the server: the API reference at ``/docs`` served
from the package's own assets, the lines ``memos serve`` prints (where it listens, one per
request, and when it stops), and ``create_cube(exist_ok=True)`` on both faces."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from _backends import FACES, Connect, clients
from _servers import free_port
from fastapi.testclient import TestClient
from memos.api import ServerSettings, create_app

from memos import HashEmbedder, MemOS
from memos.errors import CubeExists

ASSETS = Path(__file__).resolve().parents[1] / "api" / "static" / "swagger-ui"


class _References(HTMLParser):
    """Every URL a page loads: scripts, style sheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64))
    with TestClient(create_app(ServerSettings(store=f"sqlite:///{data_dir}"), mos=mos)) as test:
        yield test


def test_docs_page_loads_only_local_assets_and_they_are_served(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    references = _References()
    references.feed(page.text)
    assert len(references.urls) == 3
    assert all(url.startswith("/docs/assets/") for url in references.urls), references.urls
    assert "'/openapi.json'" in page.text
    assert not re.search(r"https?://", page.text)  # no CDN, no validator badge
    expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in references.urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        kind = expected[Path(url).suffix]
        assert asset.headers["content-type"].split(";")[0] in (kind, "application/javascript")
        assert asset.content == (ASSETS / Path(url).name).read_bytes()


def test_docs_and_the_openapi_document_are_open_and_nothing_else_is(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/docs/assets/missing.js").status_code == 404
    assert client.get("/docs/assets/../v1/cubes").status_code == 401
    assert client.get("/docs/v1/cubes").status_code == 401
    assert client.get("/metrics").status_code == 401
    spec = client.get("/openapi.json").json()
    assert "/docs" not in spec["paths"]


def test_the_assets_ship_with_their_licence() -> None:
    licence = (ASSETS / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence
    assert "Version 2.0" in licence
    assert (ASSETS / "NOTICE").is_file()
    pyproject = (ASSETS.parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"memos.api" = ["static/swagger-ui/*"]' in pyproject


def _read_until(stream: object, pattern: str, deadline: float) -> list[str]:
    lines: list[str] = []
    assert hasattr(stream, "readline")
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r} in {lines}")


@pytest.mark.slow
def test_memos_serve_says_where_it_listens_logs_requests_and_says_when_it_stops(
    data_dir: Path,
) -> None:
    with MemOS.open(data_dir) as mos:
        _, token = mos.keys.create("alice")
    port = free_port()
    memos = Path(sys.executable).parent / "memos"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [str(memos), "--data-dir", str(data_dir), "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    try:
        deadline = time.monotonic() + 60
        started = _read_until(process.stderr, "listening on", deadline)
        assert f"memos serve listening on http://127.0.0.1:{port} " in started[-1]
        assert f"data dir {data_dir.resolve()}" in started[-1]
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        made = httpx.post(
            f"{base}/v1/cubes?note=secret-query",
            json={"name": "notes", "embedder": "hash-64"},
            headers=headers,
        )
        assert made.status_code == 201, made.text
        assert httpx.get(f"{base}/v1/cubes/nope", headers=headers).status_code == 404
        logged = _read_until(process.stderr, r"GET /v1/cubes/nope 404", deadline)
        access = [line for line in logged if " memos.access " in line]
        assert re.search(r" memos\.access POST /v1/cubes 201 \d+\.\d ms$", access[-2])
        assert re.search(r" memos\.access GET /v1/cubes/nope 404 \d+\.\d ms$", access[-1])
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stderr.close()
    assert "shutting down" in rest
    assert "memos serve stopped" in rest
    everything = "".join([*logged, rest])
    assert token not in everything
    assert token.split("_")[-1] not in everything
    assert "secret-query" not in everything
    assert "hash-64" not in everything


@pytest.fixture(params=FACES)
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connect]:
    with clients(request.param, tmp_path / "data", embedder=HashEmbedder(64)) as (_, connect):
        yield connect


def test_create_cube_exist_ok_returns_the_cube_on_both_faces(connect: Connect) -> None:
    alice = connect("alice")
    made = alice.create_cube("notes", codec="fp16")
    assert alice.create_cube("notes", exist_ok=True) == made
    assert alice.create_cube("alice:notes", codec="fp32", exist_ok=True) == made
    with pytest.raises(CubeExists):
        alice.create_cube("notes")
    with pytest.raises(CubeExists):
        alice.create_cube("notes", embedder="hash-32", exist_ok=True)
    assert connect("bob").create_cube("notes", exist_ok=True).name == "bob:notes"
    assert [cube.name for cube in alice.list_cubes()] == ["alice:notes"]
    assert [e.op.value for e in alice.log("notes")] == ["cube_create"]


def test_the_store_memos_serve_names_shows_no_password() -> None:
    from memos.cli._serve import shown_store

    assert shown_store("redis://:s3cret@10.0.0.5:6379/0?prefix=memos") == (
        "redis://:***@10.0.0.5:6379/0?prefix=memos"
    )
    assert shown_store("redis://memos:s3cret@host:6379/0") == "redis://memos:***@host:6379/0"
    assert shown_store("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
