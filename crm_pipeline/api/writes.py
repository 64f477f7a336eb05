"""CRM write routes: pydantic-validated, one transaction each.

Nothing here writes `change_log`: the table triggers do, for every client alike, and the
cache worker and change-log sensor turn those rows into targeted cache rebuilds.

Read-your-writes: each transaction reads back its own change rows just before it commits, and
once it has committed they go into this process's memory of recent changes at once (not when
their notification arrives), so the next read of an affected cache file rebuilds it instead of
serving the version from before the write.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Request, Response, Security
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_extra_types.currency_code import ISO4217
from sqlalchemy import Connection, text
from sqlalchemy.exc import DataError, IntegrityError

from crm_pipeline.api.auth import AUTH_RESPONSES, actor, authenticate
from crm_pipeline.api.change_listener import own_changes
from crm_pipeline.api.problems import Problem
from crm_pipeline.db.crm_core import ORDER_STATUSES, link_leads_to_customers

# Every write needs a key with `crm:write`; change rows name that key as their actor.
router = APIRouter(
    tags=["writes"],
    dependencies=[Security(authenticate, scopes=["crm:write"])],
    responses=AUTH_RESPONSES,
)


def _nfkc(value: Any) -> Any:
    # Full-width letters and other compatibility forms become their plain equivalents, so
    # `ａｎａ@example.com` and `ana@example.com` are one person.
    return unicodedata.normalize("NFKC", value) if isinstance(value, str) else value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[
    str,
    BeforeValidator(_nfkc),
    StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(str.lower),
]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=40, pattern=r"^\+?[0-9 ().-]{3,}$")
]
Tier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
Ident = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^\S+$")
]
BigId = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text and jsonb cannot store U+0000: refuse it here as a 422, not a 500.
        if _has_nul(data):
            raise ValueError("text must not contain NUL (U+0000) characters")
        return data


class CustomerIn(_Model):
    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    tier: Tier = "standard"
    fb_psid: Ident | None = None


class CustomerPatch(_Model):
    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    tier: Tier | None = None
    fb_psid: Ident | None = None


Amount = Annotated[Decimal, Field(ge=0, le=Decimal("999999999999.99"), decimal_places=2)]
OrderStatus = Literal[ORDER_STATUSES]  # type: ignore[valid-type]


class OrderIn(_Model):
    external_id: Ident
    customer_id: BigId
    amount: Amount
    currency: ISO4217 = "USD"
    status: OrderStatus = "paid"


class OrderPatch(_Model):
    """What may change on an existing order; it never moves to another customer."""

    amount: Amount | None = None
    currency: ISO4217 | None = None
    status: OrderStatus | None = None


class FieldAnswer(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    values: Annotated[
        list[Annotated[str, StringConstraints(max_length=2000)]], Field(max_length=50)
    ]


class LeadIn(_Model):
    """A lead captured by our own form (not Lead Ads): matched to a customer by email/phone."""

    id: Ident | None = None  # the form's own id for idempotent retries; generated when absent
    email: Email | None = None
    phone: Phone | None = None
    full_name: Name | None = None
    form_id: Ident | None = None
    ad_id: Ident | None = None
    field_data: Annotated[list[FieldAnswer], Field(max_length=100)] | None = None


class MessageIn(_Model):
    text: Annotated[str, StringConstraints(min_length=1, max_length=5000)]
    from_id: Ident | None = None
    id: Ident | None = None


@contextmanager
def write_transaction(request: Request) -> Iterator[Connection]:
    """The request's write transaction (change rows name its API key); after it commits, the
    changes it logged are recorded as this process's own (`RecentChanges.record_own`)."""
    with request.app.state.db.begin(actor(request)) as conn:
        yield conn
        changes = own_changes(conn)  # before the commit: the rows of this transaction
    if changes:  # committed
        request.app.state.cache.recent.record_own(changes)


def _row(conn: Connection, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
    row = conn.execute(text(sql), params).mappings().first()
    return dict(row) if row else None


def _conflict(exc: IntegrityError | DataError) -> Problem:
    if isinstance(exc, DataError):
        return Problem(422, "Invalid value", "A value cannot be stored as given.")
    sqlstate = getattr(exc.orig, "sqlstate", None)
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    if sqlstate == "23505":
        field = {"uq_customers_email": "email", "uq_customers_fb_psid": "fb_psid"}.get(
            constraint or "", "a unique field"
        )
        return Problem(409, "Conflict", f"Another record already has this {field}.")
    if sqlstate == "23503":
        return Problem(422, "Unknown reference", "A referenced record does not exist.")
    return Problem(422, "Constraint violated", "The data violates a database constraint.")


_CUSTOMER_COLUMNS = "id, name, email, phone, tier, fb_psid, created_at, updated_at"
_ORDER_COLUMNS = "id, external_id, customer_id, amount, currency, status, created_at"
_LEAD_COLUMNS = "id, form_id, ad_id, created_time, email, phone, full_name, customer_id"

# A customer's Messenger conversations seen before the PSID was known become theirs (never
# taken from another customer).
_LINK_PSID = "UPDATE conversations SET customer_id = :id WHERE psid = :psid AND customer_id IS NULL"


@router.post("/api/customers", status_code=201, summary="Create a customer")
def create_customer(request: Request, body: CustomerIn) -> dict[str, Any]:
    try:
        with write_transaction(request) as conn:
            row = _row(
                conn,
                "INSERT INTO customers (name, email, phone, tier, fb_psid)"
                " VALUES (:name, lower(:email), :phone, :tier, :fb_psid)"
                f" RETURNING {_CUSTOMER_COLUMNS}",
                body.model_dump(),
            )
            if body.fb_psid:
                conn.execute(text(_LINK_PSID), {"id": row["id"], "psid": body.fb_psid})
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    return row


@router.patch(
    "/api/customers/{customer_id}",
    summary="Update a customer",
    responses={404: {"description": "no such customer"}},
)
def update_customer(
    request: Request, body: CustomerPatch, customer_id: int = Path(ge=1, le=2**63 - 1)
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("tier", "") is None:
        raise Problem(422, "Invalid request", "tier cannot be null.")
    assignments = ", ".join(
        f"{c} = lower(:{c})" if c == "email" else f"{c} = :{c}" for c in changes
    )
    try:
        with write_transaction(request) as conn:
            if assignments:
                row = _row(
                    conn,
                    f"UPDATE customers SET {assignments}, updated_at = now()"
                    f" WHERE id = :id RETURNING {_CUSTOMER_COLUMNS}",
                    {**changes, "id": customer_id},
                )
            else:
                row = _row(
                    conn,
                    f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = :id",
                    {"id": customer_id},
                )
            if row is not None and changes.get("fb_psid"):
                conn.execute(text(_LINK_PSID), {"id": customer_id, "psid": changes["fb_psid"]})
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    if row is None:
        raise Problem(404, "Not found", "No customer with that id.")
    return row


@router.post(
    "/api/orders",
    status_code=201,
    summary="Record an order (idempotent on external_id)",
    responses={
        200: {"description": "the same order was already recorded; nothing changed"},
        409: {
            "description": "external_id is taken by another customer's order, or by an order "
            "with other values (change those with PATCH /api/orders/{id})"
        },
    },
)
def create_order(request: Request, response: Response, body: OrderIn) -> dict[str, Any]:
    params = body.model_dump()
    try:
        with write_transaction(request) as conn:
            row = _row(
                conn,
                "INSERT INTO orders (external_id, customer_id, amount, currency, status)"
                " VALUES (:external_id, :customer_id, :amount, :currency, :status)"
                f" ON CONFLICT (external_id) DO NOTHING RETURNING {_ORDER_COLUMNS}",
                params,
            )
            if row is None:  # the external_id exists: a retry, or a clash
                row = _row(
                    conn,
                    f"SELECT {_ORDER_COLUMNS} FROM orders WHERE external_id = :external_id",
                    params,
                )
                if row is None:  # deleted between the two statements
                    raise Problem(409, "Conflict", "The order changed meanwhile; retry.")
                response.status_code = 200
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    if response.status_code == 200:
        if row["customer_id"] != body.customer_id:
            raise Problem(
                409, "Conflict", "An order with this external_id belongs to another customer."
            )
        if (row["amount"], row["currency"], row["status"]) != (
            body.amount,
            body.currency,
            body.status,
        ):
            raise Problem(
                409,
                "Conflict",
                "An order with this external_id exists with other values; change it with "
                f"PATCH /api/orders/{row['id']}.",
                order_id=row["id"],
            )
    return row


@router.patch(
    "/api/orders/{order_id}",
    summary="Change an order's amount, currency or status",
    responses={404: {"description": "no such order"}},
)
def update_order(
    request: Request, body: OrderPatch, order_id: int = Path(ge=1, le=2**63 - 1)
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if any(v is None for v in changes.values()):
        raise Problem(422, "Invalid request", "amount, currency and status cannot be null.")
    assignments = ", ".join(f"{c} = :{c}" for c in changes)
    try:
        with write_transaction(request) as conn:
            row = _row(
                conn,
                f"UPDATE orders SET {assignments} WHERE id = :id RETURNING {_ORDER_COLUMNS}"
                if assignments
                else f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = :id",
                {**changes, "id": order_id},
            )
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    if row is None:
        raise Problem(404, "Not found", "No order with that id.")
    return row


# True when the stored lead holds exactly what this request would store.
_SAME_LEAD = """
SELECT form_id IS NOT DISTINCT FROM :form_id AND ad_id IS NOT DISTINCT FROM :ad_id
   AND email IS NOT DISTINCT FROM :email AND phone IS NOT DISTINCT FROM :phone
   AND full_name IS NOT DISTINCT FROM :full_name
   AND field_data IS NOT DISTINCT FROM CAST(:field_data AS jsonb)
FROM leads WHERE id = :id
"""


@router.post(
    "/api/leads",
    status_code=201,
    summary="Capture a lead from a web form",
    responses={
        200: {"description": "the same lead was already recorded; nothing changed"},
        409: {"description": "a different lead with this id exists"},
    },
)
def create_lead(request: Request, response: Response, body: LeadIn) -> dict[str, Any]:
    if not (body.email or body.phone):
        raise Problem(422, "Invalid request", "A lead needs an email or a phone number.")
    field_data = [a.model_dump() for a in body.field_data] if body.field_data else None
    params = {
        **body.model_dump(exclude={"field_data"}),
        "id": body.id or f"web_{uuid.uuid4().hex}",
        "field_data": orjson.dumps(field_data).decode() if field_data is not None else None,
    }
    try:
        with write_transaction(request) as conn:
            inserted = conn.execute(
                text(
                    "INSERT INTO leads (id, form_id, ad_id, created_time, email, phone,"
                    " full_name, field_data)"
                    " VALUES (:id, :form_id, :ad_id, now(), :email, :phone, :full_name,"
                    " CAST(:field_data AS jsonb)) ON CONFLICT (id) DO NOTHING RETURNING id"
                ),
                params,
            ).first()
            if inserted is None:
                # Never echo a stored lead to whoever knows its id: only a byte-identical
                # retry is answered with it.
                if not conn.execute(text(_SAME_LEAD), params).scalar():
                    raise Problem(409, "Conflict", "A different lead with this id exists.")
                response.status_code = 200
            else:
                link_leads_to_customers(conn, [params["id"]])
            row = _row(conn, f"SELECT {_LEAD_COLUMNS} FROM leads WHERE id = :id", params)
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    return row


@router.post(
    "/api/conversations/{conversation_id}/messages",
    status_code=201,
    summary="Add a message to a conversation",
    responses={404: {"description": "no such conversation"}},
)
def create_message(
    request: Request,
    body: MessageIn,
    conversation_id: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00]+$")],
) -> dict[str, Any]:
    try:
        with write_transaction(request) as conn:
            conversation = _row(
                conn,
                "UPDATE conversations SET updated_time = greatest(updated_time, now())"
                " WHERE id = :id RETURNING id, page_id",
                {"id": conversation_id},
            )
            if conversation is None:
                raise Problem(404, "Not found", "No conversation with that id.")
            row = _row(
                conn,
                "INSERT INTO messages (id, conversation_id, from_id, text, created_time)"
                " VALUES (:id, :conversation_id, :from_id, :text, now())"
                " ON CONFLICT (id) DO NOTHING"
                " RETURNING id, conversation_id, from_id, text, created_time",
                {
                    "id": body.id or f"api_{uuid.uuid4().hex}",
                    "conversation_id": conversation_id,
                    "from_id": body.from_id or conversation["page_id"],
                    "text": body.text,
                },
            )
            if row is None:
                raise Problem(409, "Conflict", "A message with this id already exists.")
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    return row
