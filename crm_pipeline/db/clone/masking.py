"""`mask_pii`: everything personal as keyed hashes (HMAC-SHA256), computed in SQL.

What is masked is `PII_COLUMNS` (table -> column -> kind), the one list of it:

- `customers.name/email/phone`, `leads.full_name/email/phone`: by kind (`name-<hex>`,
  `<hex>@masked.invalid`, `phone-<hex>`).
- PSIDs (`customers.fb_psid`, `conversations.psid`, and `messages.from_id` unless it is the
  conversation's page id): `psid-<hex>`, one kind everywhere, so the three still join.
- `messages.text`: `text-<hex>`.
- `leads.field_data`: every value of every entry (custom questions can hold anything); the
  entry names and the structure stay. Values of the known email/phone/name questions get
  their kind (so the email in `field_data` still equals `leads.email`), others `answer-<hex>`.
  An entry of another shape than `{name, values: [...]}` has every string and number masked.
- `webhook_inbox.payload` (Meta's notification as it came, rejected entries included): every
  string and number leaf becomes `value-<hex>`; object keys, booleans, nulls and the shape stay.
  Numbers too, because Meta sometimes sends ids (PSIDs included) as JSON integers.

Kept as they are, because they hold no one's personal data: ids (ours and Meta's: leads,
conversations, message mids, pages, forms, ads), marketing objects and insights, orders'
amounts, `change_log` (table, row id, actor), `webhook_inbox.error` (reasons are written to
name the rule, never the value), `sync_state` watermarks.

The HMAC is built from the key's inner and outer pads with the built-in `sha256()`, so no
extension and no helper function is needed: the source is read in a READ ONLY transaction
(perhaps on a hot standby), where not even a `pg_temp` function can be created. The hex part
depends only on the value (emails are trimmed and lower-cased first), so equal inputs give
equal outputs and joins and uniqueness survive. The key comes from `CRM_MASK_KEY`; without it
a fixed built-in key is used, which keeps clones reproducible but is guessable: production must
set `CRM_MASK_KEY`.
"""

from __future__ import annotations

import hashlib
import hmac

from psycopg import sql

from crm_pipeline.config import load_settings

MASKED_EMAIL_DOMAIN = "masked.invalid"
# Kinds that are not one scalar value: a Lead Ads field_data array, any JSON document, and a
# message sender (a PSID, or the page itself).
FIELD_DATA, JSON_DOCUMENT, SENDER = "field_data", "json", "sender"
# table -> column -> kind of PII
PII_COLUMNS: dict[str, dict[str, str]] = {
    "customers": {"name": "name", "email": "email", "phone": "phone", "fb_psid": "psid"},
    "leads": {"email": "email", "phone": "phone", "full_name": "name", "field_data": FIELD_DATA},
    "conversations": {"psid": "psid"},
    "messages": {"from_id": SENDER, "text": "text"},
    "webhook_inbox": {"payload": JSON_DOCUMENT},
}
# Lead Ads `field_data` entries ({name, values}) whose values keep the kind of their question;
# the values of every other entry are masked as `answer`.
PII_FIELD_NAMES = {
    "email": "email",
    "phone": "phone",
    "phone_number": "phone",
    "full_name": "name",
    "first_name": "name",
    "last_name": "name",
}
_HASH_CHARS = 24  # 96 bits of the HMAC: collisions are negligible, uniqueness survives


def mask_key(env: dict[str, str] | None = None) -> bytes:
    """The HMAC key: `CRM_MASK_KEY`, else the built-in (public) default."""
    return load_settings(env).effective_mask_key()


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def _normalise(kind: str, value: str) -> str:
    return value.strip().lower() if kind == "email" else value


def mask_value(kind: str, value: str | None, key: bytes) -> str | None:
    """The masked form of `value` (Python twin of the SQL expression, for tests and docs)."""
    if value is None:
        return None
    digest = hmac.new(key, _normalise(kind, value).encode(), hashlib.sha256).hexdigest()
    digest = digest[:_HASH_CHARS]
    if kind == "email":
        return f"{digest}@{MASKED_EMAIL_DOMAIN}"
    return f"{kind}-{digest}"


def mask_sql(kind: str, expr: sql.Composable, key: bytes) -> sql.Composable:
    """SQL for HMAC-SHA256(key, value) with built-in sha256(): H(opad || H(ipad || m))."""
    ipad, opad = _pads(key)
    value = sql.SQL("lower(btrim({}))").format(expr) if kind == "email" else expr
    digest = sql.SQL(
        "left(encode(sha256({opad}::bytea || sha256({ipad}::bytea || convert_to({v}, 'UTF8'))),"
        " 'hex'), {n})"
    ).format(opad=sql.Literal(opad), ipad=sql.Literal(ipad), v=value, n=sql.Literal(_HASH_CHARS))
    if kind == "email":
        return sql.SQL("({d} || {s})").format(d=digest, s=sql.Literal("@" + MASKED_EMAIL_DOMAIN))
    return sql.SQL("({p} || {d})").format(p=sql.Literal(f"{kind}-"), d=digest)


def mask_column_sql(table: str, column: str, key: bytes) -> sql.Composable | None:
    """The masked read of `table.column` per `PII_COLUMNS`; None when it is not personal."""
    kind = PII_COLUMNS.get(table, {}).get(column)
    # Qualified, so that no column of the masking's own subqueries can shadow it.
    ident = sql.Identifier(table, column)
    if kind is None:
        return None
    if kind == FIELD_DATA:
        return mask_field_data_sql(ident, key)
    if kind == JSON_DOCUMENT:
        return mask_json_sql(ident, key)
    if kind == SENDER:
        return mask_sender_sql(table, ident, key)
    return mask_sql(kind, ident, key)


def mask_sender_sql(table: str, column: sql.Composable, key: bytes) -> sql.Composable:
    """A message's `from_id`: kept when it is the conversation's page (the business, not a
    person), else masked as a PSID, like `customers.fb_psid` and `conversations.psid`."""
    page = sql.SQL(
        "(SELECT c.page_id FROM conversations AS c WHERE c.id = {t}.conversation_id)"
    ).format(t=sql.Identifier(table))
    return sql.SQL("CASE WHEN {c} = {page} THEN {c} ELSE {m} END").format(
        c=column, page=page, m=mask_sql("psid", column, key)
    )


# A JSON document rebuilt with every string and number leaf masked, without a helper function.
# The walk lists every node with its place (`ord`) and the text that comes before it in the
# document (a comma, the quoted key). Each node then yields its piece: `{`/`[` (closed by a
# second piece ordered after all its children), its masked value, or its own text (booleans,
# nulls). Every piece is serialised by PostgreSQL (`to_jsonb(...)::text`) and the whole is
# parsed back with `::jsonb`, so no key or value can break the structure.
_REBUILD = """(SELECT string_agg(piece, '' ORDER BY ord)::jsonb FROM (
WITH RECURSIVE node(ord, v, prefix) AS (
    SELECT ARRAY[]::int[], {doc}, ''
  UNION ALL
    SELECT n.ord || k.i::int, k.value,
           CASE WHEN k.i > 1 THEN ',' ELSE '' END || coalesce(to_jsonb(k.key)::text || ':', '')
    FROM node AS n CROSS JOIN LATERAL (
        SELECT e.key, e.value, e.i
        FROM jsonb_each(CASE WHEN jsonb_typeof(n.v) = 'object' THEN n.v END)
             WITH ORDINALITY AS e(key, value, i)
      UNION ALL
        SELECT NULL, a.value, a.i
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(n.v) = 'array' THEN n.v END)
             WITH ORDINALITY AS a(value, i)
    ) AS k
)
SELECT ord, prefix || CASE jsonb_typeof(v)
    WHEN 'object' THEN '{{' WHEN 'array' THEN '['
    WHEN 'string' THEN to_jsonb({masked})::text WHEN 'number' THEN to_jsonb({masked})::text
    ELSE v::text END AS piece
FROM node
UNION ALL
SELECT ord || 2147483647, CASE jsonb_typeof(v) WHEN 'object' THEN '}}' ELSE ']' END
FROM node WHERE jsonb_typeof(v) IN ('object', 'array')
) AS pieces)"""
# The text of one JSON value `v` (a string without its quotes).
_VALUE_TEXT = sql.SQL("(v #>> '{}')")


def _mask_leaves_sql(doc: sql.Composable, kind: str, key: bytes) -> sql.Composable:
    """`doc` with every string and number leaf masked as `kind`; keys, booleans, nulls and the
    shape kept. Numbers too, because Meta sometimes sends ids (PSIDs) as JSON integers."""
    return sql.SQL(_REBUILD).format(doc=doc, masked=mask_sql(kind, _VALUE_TEXT, key))


def mask_json_sql(column: sql.Composable, key: bytes) -> sql.Composable:
    """Every string and number leaf of a JSON document as `value-<hex>`. Nothing in a raw
    webhook payload is known to be safe: Meta adds fields, and rejected entries are stored as
    they came."""
    return _mask_leaves_sql(column, "value", key)


# A field_data entry as Meta sends it: a question's `name` and a list of `values`, nothing else.
_REGULAR_ENTRY = """jsonb_typeof(fd.e) = 'object' AND jsonb_typeof(fd.e -> 'name') = 'string'
 AND jsonb_typeof(fd.e -> 'values') = 'array' AND fd.e - 'name' - 'values' = '{}'::jsonb"""


def _entry_values_sql(key: bytes) -> sql.Composable:
    """The masked `values` of a regular entry `fd.e`: each value (of any type) as a string of
    the kind of its question (`PII_FIELD_NAMES`), else `answer`."""
    by_kind: dict[str, list[str]] = {}
    for name, kind in PII_FIELD_NAMES.items():
        by_kind.setdefault(kind, []).append(name)
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN fd.e ->> 'name' IN ({names}) THEN {m}").format(
            names=sql.SQL(", ").join(map(sql.Literal, names)), m=mask_sql(kind, _VALUE_TEXT, key)
        )
        for kind, names in by_kind.items()
    )
    return sql.SQL(
        "(SELECT coalesce(jsonb_agg(to_jsonb(CASE {cases} ELSE {answer} END) ORDER BY i),"
        " '[]'::jsonb) FROM jsonb_array_elements(fd.e -> 'values') WITH ORDINALITY AS w(v, i))"
    ).format(cases=cases, answer=mask_sql("answer", _VALUE_TEXT, key))


def mask_field_data_sql(column: sql.Composable, key: bytes) -> sql.Composable:
    """Every value of every entry of a Lead Ads `field_data` array masked; the entries' `name`s
    (the form's questions) kept. Anything irregular (an entry of another shape, a field_data
    that is not an array) has every string and number leaf masked as `answer`."""
    # Regular entries take the direct path: the general rebuild costs a few times more per row.
    return sql.SQL(
        "CASE WHEN jsonb_typeof({c}) = 'array' THEN (SELECT coalesce(jsonb_agg("
        "CASE WHEN {regular} THEN jsonb_set(fd.e, '{{values}}', {values}) ELSE {other} END"
        " ORDER BY fd.o), '[]'::jsonb) FROM jsonb_array_elements({c}) WITH ORDINALITY AS fd(e, o))"
        " ELSE {whole} END"
    ).format(
        c=column,
        regular=sql.SQL(_REGULAR_ENTRY),
        values=_entry_values_sql(key),
        other=_mask_leaves_sql(sql.SQL("fd.e"), "answer", key),
        whole=_mask_leaves_sql(column, "answer", key),
    )
