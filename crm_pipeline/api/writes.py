"""CRM write routes: pydantic-validated, one transaction each.

Nothing here writes `change_log`: the table triggers do, for every client alike, and the
change-log sensor turns those rows into targeted cache rebuilds.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import Connection, text
from sqlalchemy.exc import DataError, IntegrityError

from crm_pipeline.api.problems import Problem
from crm_pipeline.db.crm_core import link_leads_to_customers

router = APIRouter(tags=["writes"])

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
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


class OrderIn(_Model):
    external_id: Ident
    customer_id: BigId
    amount: Annotated[Decimal, Field(ge=0, le=Decimal("999999999999.99"), decimal_places=2)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    status: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] = "paid"


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


@router.post("/api/customers", status_code=201, summary="Create a customer")
def create_customer(request: Request, body: CustomerIn) -> dict[str, Any]:
    try:
        with request.app.state.db.begin() as conn:
            row = _row(
                conn,
                "INSERT INTO customers (name, email, phone, tier, fb_psid)"
                " VALUES (:name, lower(:email), :phone, :tier, :fb_psid)"
                f" RETURNING {_CUSTOMER_COLUMNS}",
                body.model_dump(),
            )
            if body.fb_psid:  # conversations already seen from this person become theirs
                conn.execute(
                    text(
                        "UPDATE conversations SET customer_id = :id"
                        " WHERE psid = :psid AND customer_id IS NULL"
                    ),
                    {"id": row["id"], "psid": body.fb_psid},
                )
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
        with request.app.state.db.begin() as conn:
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
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    if row is None:
        raise Problem(404, "Not found", "No customer with that id.")
    return row


@router.post(
    "/api/orders",
    status_code=201,
    summary="Record an order (idempotent on external_id)",
    responses={200: {"description": "the order existed; updated if it differed"}},
)
def create_order(request: Request, response: Response, body: OrderIn) -> dict[str, Any]:
    try:
        with request.app.state.db.begin() as conn:
            row = _row(
                conn,
                "INSERT INTO orders (external_id, customer_id, amount, currency, status)"
                " VALUES (:external_id, :customer_id, :amount, :currency, :status)"
                " ON CONFLICT (external_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,"
                "   amount = EXCLUDED.amount, currency = EXCLUDED.currency,"
                "   status = EXCLUDED.status"
                " RETURNING id, external_id, customer_id, amount, currency, status, created_at,"
                "   (xmax = 0) AS inserted",
                body.model_dump(),
            )
    except (IntegrityError, DataError) as exc:
        raise _conflict(exc) from None
    if not row.pop("inserted"):
        response.status_code = 200
    return row


@router.post("/api/leads", status_code=201, summary="Capture a lead from a web form")
def create_lead(request: Request, body: LeadIn) -> dict[str, Any]:
    if not (body.email or body.phone):
        raise Problem(422, "Invalid request", "A lead needs an email or a phone number.")
    import orjson

    field_data = [a.model_dump() for a in body.field_data] if body.field_data else None
    params = {
        **body.model_dump(exclude={"field_data"}),
        "id": body.id or f"web_{uuid.uuid4().hex}",
        "field_data": orjson.dumps(field_data).decode() if field_data is not None else None,
    }
    try:
        with request.app.state.db.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO leads (id, form_id, ad_id, created_time, email, phone,"
                    " full_name, field_data)"
                    " VALUES (:id, :form_id, :ad_id, now(), :email, :phone, :full_name,"
                    " CAST(:field_data AS jsonb)) ON CONFLICT (id) DO NOTHING"
                ),
                params,
            )
            link_leads_to_customers(conn)
            row = _row(
                conn,
                "SELECT id, form_id, ad_id, created_time, email, phone, full_name, customer_id"
                " FROM leads WHERE id = :id",
                {"id": params["id"]},
            )
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
        with request.app.state.db.begin() as conn:
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
