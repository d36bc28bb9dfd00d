"""Property-based run of every operation of the OpenAPI spec (schemathesis): no input gives a 500.

Schemathesis' pytest fixture loader does not run under pytest 9, so the test walks the operations with
its Python API and drives each one with Hypothesis, valid and invalid inputs alike, bounded in examples.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from serve_helpers import AUTH

EXAMPLES = 15


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_is_a_server_error(
    make_client: Callable[..., TestClient], classifier_run: Path, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", make_client(classifier=classifier_run).app)
    checks = [not_a_server_error, content_type_conformance]
    if mode is GenerationMode.POSITIVE:
        checks.append(response_schema_conformance)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.path_parameters or operation.query or operation.body):
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case) -> None:
            case.call_and_validate(headers=AUTH, checks=checks)

        call()
