"""How a Facebook step calls Meta, fails, retries and reports rows it could not load.

Every Facebook raw asset (built-in and custom insights, objects, leads, conversations) is in the
`graph_api` pool, retries under one policy, turns settled errors into an immediate failure and
reports quarantined rows with the same check.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from crm_pipeline.config import ConfigError
from crm_pipeline.facebook.account_threads import AccountOutcome, first_failure
from crm_pipeline.facebook.errors import GraphApiError

GRAPH_POOL = "graph_api"  # op concurrency pool: how many steps call Meta at once (dagster.yaml)
RETRY = dg.RetryPolicy(
    max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@contextmanager
def failing_fast() -> Iterator[None]:
    """Retryable Graph errors go back to the RetryPolicy; the rest fail the step at once.

    A configuration error (missing credentials, no emulator package) will not heal by retrying
    either: the run fails at once, naming what to set.
    """
    try:
        yield
    except ConfigError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except GraphApiError as exc:
        if exc.retryable:
            raise
        # An invalid token (190) or a permission error will not heal by retrying.
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def quarantine_check(asset_key: str, bad: list[dict], path, **extra: Any) -> dg.AssetCheckResult:
    """The visible verdict on malformed rows of one materialisation."""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name="no_quarantined_rows",
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "quarantined": len(bad),
            "reasons": dg.MetadataValue.json(sorted({b["reason"] for b in bad})[:20]),
            **({"path": dg.MetadataValue.path(str(path))} if path else {}),
            **extra,
        },
    )


def quarantine_spec(name: str) -> dg.AssetCheckSpec:
    """The `no_quarantined_rows` check of the raw asset `name`."""
    return dg.AssetCheckSpec(
        "no_quarantined_rows",
        asset=name,
        description="Fails when the Graph API returned rows that could not be loaded.",
    )


def raise_first_failure(outcomes: list[AccountOutcome]) -> None:
    """Fail the step for the first failed account, naming it: at once when retrying cannot
    help, else through the RetryPolicy (every account is read again)."""
    failed = first_failure(outcomes, settled=_settled)
    if failed is None:
        return
    if _settled(failed.error):
        raise dg.Failure(description=f"{failed.account_id}: {failed.error}", allow_retries=False)
    raise failed.error


def _settled(error: BaseException) -> bool:
    """Whether retrying the run cannot help (a bad token, a permission, a configuration)."""
    return isinstance(error, ConfigError) or (
        isinstance(error, GraphApiError) and not error.retryable
    )
