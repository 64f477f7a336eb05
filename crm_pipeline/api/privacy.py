"""The erasure route: `DELETE /api/customers/{id}` erases that person (scope `privacy:erase`).

The same request as `crm-pipeline privacy erase --customer-id ID` (`crm_pipeline.erasure`):
database, raw lake and cache files, recorded in `erasures` with the API key as the actor.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request, Security

from crm_pipeline.api.auth import AUTH_RESPONSES, actor, authenticate
from crm_pipeline.api.cache_keys import customer_key
from crm_pipeline.api.problems import Problem
from crm_pipeline.erasure import PersonError, erase_person

router = APIRouter(
    tags=["privacy"],
    dependencies=[Security(authenticate, scopes=["privacy:erase"])],
    responses=AUTH_RESPONSES,
)


@router.delete(
    "/api/customers/{customer_id}",
    summary="Erase a customer and everything about them (a privacy request)",
    description=(
        "Deletes the customer (kept anonymised when orders reference them, for accounting), "
        "their leads, conversations, messages and webhook events; rewrites the raw Parquet "
        "files that hold them; rebuilds their cache files; keeps their identifiers only as "
        "keyed hashes so later syncs drop them. Answers with counts, never values."
    ),
    responses={
        404: {"description": "no such customer"},
        409: {"description": "the customer's identifiers reach other customers"},
    },
)
def erase_customer(
    request: Request,
    customer_id: int = Path(ge=1, le=2**63 - 1),
    dry_run: bool = Query(False, description="count what would be erased; change nothing"),
    allow_multiple_customers: bool = Query(
        False, description="erase even when a shared identifier reaches other customers"
    ),
) -> dict[str, Any]:
    settings = request.app.state.settings
    try:
        result = erase_person(
            request.app.state.db.engine(),
            "customer_id",
            str(customer_id),
            actor=actor(request),
            data_dir=settings.data_dir,
            cache_dir=request.app.state.cache.files.store,
            dry_run=dry_run,
            allow_multiple_customers=allow_multiple_customers,
        )
    except PersonError as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    if not dry_run:  # this process's copy must not outlive the file (a store outage serves it)
        request.app.state.cache.files.forget(customer_key(customer_id).path)
    if not result.found:
        raise Problem(404, "Not found", "No customer with that id.")
    return {"erasure_id": result.erasure_id, "dry_run": result.dry_run, "counts": result.counts()}
