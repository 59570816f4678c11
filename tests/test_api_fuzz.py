"""Property-based fuzzing over the OpenAPI document (schemathesis): whatever a client sends to any
operation, valid by the schema or not, the answer is never a 5xx. Runs against a real daemon process
over HTTP; the number of examples is bounded so the whole file stays well under a minute."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, response_schema_conformance

from streamd.api.routes import openapi_document
from tests.factories.daemon import Daemon

schema = schemathesis.openapi.from_dict(openapi_document())
# The daemon is one process for the module; `POST` bodies that are valid would create networks,
# streams and tasks, which is fine: each example is independent of the others' outcome.
MAX_EXAMPLES = 10


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    daemon = Daemon(data_dir).start()
    yield daemon
    daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()[-4000:]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures reproduce locally
    database=None,  # nothing written into the checkout (.hypothesis/)
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: schemathesis.Case, daemon: Daemon) -> None:
    response = case.call(base_url=daemon.url.rstrip("/"), timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"{case.as_curl_command()}"
    )
    # What the daemon answers is what /openapi.json says it answers (schemas, content types).
    case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
