"""`mask_pii`: names, emails and phones as keyed hashes (HMAC-SHA256), computed in SQL.

The HMAC is built from the key's inner and outer pads with the built-in `sha256()`, so no
extension is needed. Equal inputs give equal outputs, so joins and uniqueness survive; emails
keep an email shape. The key comes from `CRM_MASK_KEY`; without it a fixed built-in key is
used, which keeps clones reproducible but is guessable: production must set `CRM_MASK_KEY`.
"""

from __future__ import annotations

import hashlib
import hmac

from psycopg import sql

from crm_pipeline.config import load_settings

MASKED_EMAIL_DOMAIN = "masked.invalid"
# table -> column -> kind of PII
PII_COLUMNS: dict[str, dict[str, str]] = {
    "customers": {"name": "name", "email": "email", "phone": "phone"},
    "leads": {"email": "email", "phone": "phone", "full_name": "name"},
}
# Lead Ads `field_data` entries ({name, values}) whose values are masked, by kind.
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


def mask_field_data_sql(column: sql.Composable, key: bytes) -> sql.Composable:
    """Mask the values of PII entries in a Lead Ads `field_data` array; keep everything else."""
    value = sql.SQL("(v #>> '{}')")
    by_kind = {
        kind: sql.SQL(
            "(SELECT coalesce(jsonb_agg(to_jsonb({m}) ORDER BY i), '[]'::jsonb)"
            " FROM jsonb_array_elements(e->'values') WITH ORDINALITY AS w(v, i))"
        ).format(m=mask_sql(kind, value, key))
        for kind in ("email", "phone", "name")
    }
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN e->>'name' = {n} THEN jsonb_set(e, '{{values}}', {m})").format(
            n=sql.Literal(name), m=by_kind[kind]
        )
        for name, kind in PII_FIELD_NAMES.items()
    )
    return sql.SQL(
        "CASE WHEN jsonb_typeof({c}) = 'array' THEN (SELECT jsonb_agg("
        "CASE WHEN jsonb_typeof(e) = 'object' AND jsonb_typeof(e->'values') = 'array' "
        "THEN CASE {cases} ELSE e END ELSE e END ORDER BY o)"
        " FROM jsonb_array_elements({c}) WITH ORDINALITY AS x(e, o)) ELSE {c} END"
    ).format(c=column, cases=cases)
