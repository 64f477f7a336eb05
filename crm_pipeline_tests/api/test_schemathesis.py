"""Property-based requests generated from our OpenAPI schema: no input makes the API answer 5xx."""

from __future__ import annotations

import schemathesis  # noqa: E402  (a dev dependency: a missing one is a failure, not a skip)
from hypothesis import HealthCheck, given, settings  # noqa: E402


def test_no_generated_request_gets_a_server_error(api):
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    failures: list[str] = []
    # With a key holding every scope, so the generated bodies reach the routes behind auth.
    headers = {"Authorization": f"Bearer {api.key}"}
    for operation in operations:
        _fuzz(operation, failures, headers)
    assert failures == []


def _fuzz(operation, failures: list[str], headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call(headers=headers)
        if response.status_code >= 500:
            failures.append(f"{operation.label}: {response.status_code} {response.text[:200]}")
        assert "Traceback" not in response.text

    run()
