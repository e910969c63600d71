"""schemathesis against the published OpenAPI document: generated requests to every operation
(valid and invalid by the schema) get no 5xx, and every answer matches the document (status
codes, content types, bodies).

The server runs over a data dir holding a cube with memories, on the tiny random Llama (chat
and KV caches stay cheap); LoRA training routes are left out, since a generated recipe may ask
for any number of steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from memos.api import ServerSettings, create_app
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from memos import HashEmbedder, MemOS
from memos.llm import LocalModel

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
TRAINING = r"/adapters$|/retrain$"
EXAMPLES = 12


@pytest.fixture
def api(data_dir: Path, tiny_model: LocalModel) -> Iterator[tuple[Any, str, dict[str, str]]]:
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64), model=tiny_model)
    _, token = mos.keys.create("alice")
    owned = mos.as_principal("alice")
    owned.create_cube("notes")
    items = owned.add_many([f"memory {n} of the fuzzed cube" for n in range(5)], cube="notes")
    app = create_app(ServerSettings(store=f"sqlite:///{data_dir}", max_new_tokens=4), mos=mos)
    yield app, token, {"cube": "notes", "item_id": items[0].id}
    mos.close()


def _operations(app: Any) -> list[Any]:
    # the import route takes a tar: generated bodies are sent as raw bytes
    schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    return [
        op
        for op in operations
        if not (op.method.upper() == "POST" and re.search(TRAINING, op.path))
    ]


def _fuzz(operation: Any, strategy: Any, token: str) -> bool:
    """Run the checks on generated cases; False when the schema admits no case of the kind
    (an operation with no parameters has no invalid request)."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_5xx_or_off_schema(
    api: tuple[Any, str, dict[str, str]], mode: GenerationMode
) -> None:
    """Every operation, with generated path parameters and then with the seeded cube's name
    and a memory id (so valid requests reach the code behind the 404s)."""
    app, token, real = api
    fuzzed = 0
    operations = _operations(app)
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        fuzzed += _fuzz(operation, operation.as_strategy(mode), token)
        known = {name: value for name, value in real.items() if name in names}
        if known:
            _fuzz(operation, operation.as_strategy(mode, path_parameters=known), token)
    assert len(operations) > 30
    assert fuzzed >= (len(operations) if mode == GenerationMode.POSITIVE else 20)
