"""Reading an account's campaigns, ad sets or ads when Meta refuses some of them.

Every status is asked for (`effective_status` IN all of them): without that filter Meta leaves
out DELETED and ARCHIVED objects, and the insights of their spend would lose their names.

Meta sometimes refuses to return one object (an ad whose creative is incomplete: code 100,
subcode 2446289), and then every page of the edge holding it fails. One such object must not
sink the stream: the edge's ids are read again (``fields=id``, same filters), each object not
yet read is read alone, and those Meta refuses alone are returned as ``refused`` (quarantine
entries, counted and shown by the stream's check). This happens at most once per edge read:
nothing loops. A token, permission, throttle or passing error still fails the read as before.

A refused object has no `updated_time` we could see, so it does not hold the watermark back:
it is read again when Meta changes it (or on a full re-read), and until then it stays visible
in the quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.error_kinds import classify_error
from crm_pipeline.facebook.errors import GraphApiError, RateLimitBudgetExceeded
from crm_pipeline.facebook.fields import OBJECT_FIELDS, object_filters
from crm_pipeline.facebook.ids import meta_account_id

__all__ = ["ObjectBatch", "is_refusal", "read_objects"]


@dataclass
class ObjectBatch:
    """The objects Meta returned, and those it refused ({"reason", "record"}, for quarantine)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)


def is_refusal(exc: GraphApiError) -> bool:
    """True when Meta answered that it will not return what was asked (code 100 and the like):
    not a token, permission or throttle error, not a passing failure, not our own wait budget."""
    if isinstance(exc, RateLimitBudgetExceeded) or exc.code is None or exc.http_status is None:
        return False
    # classify_error reads an SDK error's accessors; the client kept their values.
    view = SimpleNamespace(
        api_error_code=exc.code,
        api_error_subcode=exc.subcode,
        http_status=exc.http_status,
        api_error_message=str(exc),
        api_transient_error=exc.is_transient,
        http_headers={},
    )
    failure = classify_error(view)
    return failure is not None and failure.kind == "fatal"


def read_objects(
    client: GraphClient,
    kind: str,
    account_id: str,
    updated_after: int | None,
    *,
    limit: int = 200,
) -> ObjectBatch:
    """Campaigns, ad sets or ads (`kind`) of an account, of every status, updated after a unix
    time (all when None); objects Meta refuses are in ``refused``, the rest in ``objects``."""
    params = {"limit": limit, "filtering": object_filters(updated_after)}
    batch = ObjectBatch()
    try:
        for obj in client.iter_objects(kind, account_id, fields=OBJECT_FIELDS[kind], params=params):
            batch.objects.append(obj)
    except GraphApiError as exc:
        if not is_refusal(exc):
            raise
        _read_one_by_one(client, kind, account_id, params, batch)
    return batch


def _read_one_by_one(
    client: GraphClient, kind: str, account_id: str, params: dict, batch: ObjectBatch
) -> None:
    """After a refused page: the edge's ids (an error here fails the read), then each object
    not read yet, alone."""
    seen = {str(obj.get("id")) for obj in batch.objects}
    ids = [
        str(o["id"]) for o in client.iter_objects(kind, account_id, fields=["id"], params=params)
    ]
    for object_id in dict.fromkeys(ids):
        if object_id in seen:
            continue
        try:
            batch.objects.append(client.read_object(kind, object_id, account_id))
        except GraphApiError as exc:
            if not is_refusal(exc):
                raise
            record = {"id": object_id, "account_id": meta_account_id(account_id), "kind": kind}
            reason = f"Meta refused to return this object: {exc}"
            batch.refused.append({"reason": reason, "record": record})
