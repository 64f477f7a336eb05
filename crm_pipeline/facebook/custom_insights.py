"""Custom insights: more Meta insight tables, declared in one YAML file (`CRM_CUSTOM_INSIGHTS`).

Each entry asks Meta's /insights edge for its own level, fields, breakdowns, action breakdowns
and attribution windows, one row per object, day and breakdown value, and becomes a pair of
assets, raw Parquet and a PostgreSQL table (`crm_pipeline/defs/facebook/custom_insights.py`).
Entries are checked against what Meta accepts (the custom insights section of `fields.py`) when
the file is loaded, which is when the code location loads: a wrong entry fails `dagster
definitions validate` and `crm-pipeline sync` at once, naming the file, the entry and what to
change, rather than a scheduled run at 3 a.m.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.fields import (
    CUSTOM_ACTION_BREAKDOWNS,
    CUSTOM_ATTRIBUTION_WINDOWS,
    CUSTOM_BREAKDOWN_NEEDS,
    CUSTOM_BREAKDOWNS,
    CUSTOM_DEMOGRAPHIC_BREAKDOWNS,
    CUSTOM_FIELDS_NOT_HOURLY,
    CUSTOM_FIELDS_WITHOUT_BREAKDOWNS,
    CUSTOM_GEO_BREAKDOWNS,
    CUSTOM_HOURLY_BREAKDOWNS,
    CUSTOM_INSIGHT_FIELDS,
    CUSTOM_LEVEL_IDS,
    CUSTOM_OBJECT_FIELDS,
    REMOVED_ATTRIBUTION_WINDOWS,
    insight_params,
)
from crm_pipeline.facebook.ids import account_node

__all__ = [
    "TABLE_PREFIX",
    "CustomInsight",
    "CustomInsightsError",
    "load_custom_insights",
    "read_custom_insights",
]

# Every custom table starts with this: it can never clash with a table of ours, and the name
# says in psql where the table comes from.
TABLE_PREFIX = "fb_custom_"
# Room for the bulk upsert's stage name (`_stage_<table>_<n>`) within PostgreSQL's 63 bytes.
MAX_TABLE_LENGTH = 48
_TABLE = re.compile(rf"^{TABLE_PREFIX}[a-z][a-z0-9_]*$")
_LEVEL_ORDER = ("account", "campaign", "adset", "ad")
DATE_FIELDS = ("date_start", "date_stop")  # Meta reports both on every row


class CustomInsightsError(ValueError):
    """The custom insights file cannot be used; the message names the file, each wrong entry and
    what to change. (The definitions raise it again as a ConfigError: this package may not import
    the settings modules, which import it.)"""


class CustomInsight(BaseModel):
    """One entry of the custom insights file: what to ask Meta for, and the table it fills."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str
    level: str
    fields: tuple[str, ...] = Field(min_length=1)
    breakdowns: tuple[str, ...] = ()
    action_breakdowns: tuple[str, ...] = ("action_type",)
    action_attribution_windows: tuple[str, ...] = ()
    time_increment: int = 1

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(
                f"{value!r} is not a table name we create: use lower_snake_case starting with "
                f"{TABLE_PREFIX!r} (e.g. {TABLE_PREFIX}{_snake(value) or 'by_age'}), so it can "
                "never clash with the pipeline's own tables"
            )
        if len(value) > MAX_TABLE_LENGTH:
            raise ValueError(f"{value!r} is longer than {MAX_TABLE_LENGTH} characters: shorten it")
        return value

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value not in CUSTOM_LEVEL_IDS:
            raise ValueError(f"{value!r} is not a level: use ad, adset, campaign or account")
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        retired = [f for f in value if f in CUSTOM_FIELDS_WITHOUT_BREAKDOWNS]
        if retired:
            raise ValueError(
                f"{', '.join(retired)}: Meta refuses {'it' if len(retired) == 1 else 'them'} "
                "with any breakdown, and no longer returns them without one either (deprecated "
                "insights fields): remove them"
            )
        return _known(value, CUSTOM_INSIGHT_FIELDS, "insights field")

    @field_validator("breakdowns")
    @classmethod
    def _breakdowns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _known(value, CUSTOM_BREAKDOWNS, "breakdown")

    @field_validator("action_breakdowns")
    @classmethod
    def _action_breakdowns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _known(value, CUSTOM_ACTION_BREAKDOWNS, "action breakdown")

    @field_validator("action_attribution_windows")
    @classmethod
    def _windows(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        removed = [w for w in value if w in REMOVED_ATTRIBUTION_WINDOWS]
        if removed:
            since = REMOVED_ATTRIBUTION_WINDOWS[removed[0]]
            raise ValueError(
                f"{', '.join(removed)}: Meta stopped returning the 7d_view and 28d_view "
                f"attribution windows on {since}; use 1d_view (or the click windows) instead"
            )
        return _known(value, CUSTOM_ATTRIBUTION_WINDOWS, "attribution window")

    @field_validator("time_increment", mode="before")
    @classmethod
    def _time_increment(cls, value: Any) -> int:
        if value not in (1, "1"):
            raise ValueError(
                f"{value!r} is not supported: the custom insight assets are partitioned by day, "
                "so time_increment must be 1 (one row per day); remove it or set it to 1"
            )
        return 1

    @model_validator(mode="after")
    def _combinations(self) -> CustomInsight:
        problems = _combination_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- what the entry means ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The table name without its prefix: `fb_custom_<name>_raw`, `custom_<name>`."""
        return self.table.removeprefix(TABLE_PREFIX)

    @property
    def raw_asset(self) -> str:
        """The raw asset's key (its table asset's key is `table`)."""
        return f"{TABLE_PREFIX}{self.name}_raw"

    @property
    def stream(self) -> str:
        """The raw landing's stream: `raw/custom_<name>/account=<id>/date=<day>/`."""
        return f"custom_{self.name}"

    @property
    def id_columns(self) -> tuple[str, ...]:
        """The ids of a row at this level, outermost first (`account_id` always)."""
        return CUSTOM_LEVEL_IDS[self.level]

    @property
    def value_fields(self) -> tuple[str, ...]:
        """The fields that are not ids: one table column each."""
        return tuple(f for f in self.fields if f not in self.id_columns)

    @property
    def value_kinds(self) -> dict[str, str]:
        """Value field -> how it is stored (`integer`, `decimal`, `json`, `text`)."""
        return {f: CUSTOM_INSIGHT_FIELDS[f] for f in self.value_fields}

    @property
    def request_fields(self) -> tuple[str, ...]:
        """The `fields` of the /insights read: the level's ids, then the entry's fields."""
        return self.id_columns + self.value_fields

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """The columns of the raw Parquet files (Meta returns breakdowns as row fields)."""
        return self.id_columns + DATE_FIELDS + self.breakdowns + self.value_fields

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The table's natural key: every breakdown is in it, so none collapses rows."""
        return (*self.id_columns, "date", *self.breakdowns)

    def params(self, since: date, until: date, *, limit: int | None = None) -> dict[str, Any]:
        """The /insights parameters of a daily read of ``since..until`` (inclusive)."""
        params = insight_params(since, until, limit=limit, level=self.level)
        if self.breakdowns:
            params["breakdowns"] = list(self.breakdowns)
        if self.action_breakdowns:
            params["action_breakdowns"] = list(self.action_breakdowns)
        if self.action_attribution_windows:
            params["action_attribution_windows"] = list(self.action_attribution_windows)
        return params

    def table_rows(self, raw: pa.Table) -> pa.Table:
        """Landed rows as table rows: `date_start` is `date`, a missing breakdown value is ''
        (it is part of the key, which cannot hold NULL)."""
        missing = [name for name in self.raw_columns if name not in raw.column_names]
        if missing:
            raise ValueError(
                f"the landed rows lack {', '.join(missing)}: they were landed for an earlier "
                f"version of the entry of {self.table}; materialise {self.raw_asset} for this "
                "partition again"
            )
        columns = {name: raw[name] for name in self.id_columns}
        columns["date"] = raw["date_start"]
        for name in self.breakdowns:
            columns[name] = pc.fill_null(raw[name], "")
        columns.update({name: raw[name] for name in self.value_fields})
        return pa.table(columns)


def read_custom_insights(
    client: GraphClient,
    entry: CustomInsight,
    account_id: str,
    since: date,
    until: date,
    *,
    limit: int = 500,
) -> Iterator[dict]:
    """The entry's rows of one account for ``since..until``: one paged /insights query through
    the client's rate-limit governor (values keep Meta's wire types)."""
    params = entry.params(since, until, limit=limit)
    node = account_node(account_id)
    yield from client.iter_edge_rows(node, "insights", entry.request_fields, params)


def load_custom_insights(path: Path | str | None) -> tuple[CustomInsight, ...]:
    """The entries of the custom insights file at `path` (`CRM_CUSTOM_INSIGHTS`; none when unset).

    Raises CustomInsightsError listing every problem of every entry, each naming the file, the
    entry and what to change.
    """
    if path is None:
        return ()
    path = Path(path)
    entries: list[CustomInsight] = []
    problems: list[str] = []
    raw_entries = _read(path)
    for number, raw in enumerate(raw_entries, 1):
        where = f"entry {number}"
        if isinstance(raw, dict) and isinstance(raw.get("table"), str):
            where += f" (table {raw['table']})"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping with table, level and fields")
            continue
        try:
            entries.append(CustomInsight.model_validate(raw))
        except ValidationError as exc:
            problems += [f"{where}: {problem}" for problem in _messages(exc)]
    problems += _duplicate_tables(raw_entries)
    if problems:
        raise CustomInsightsError(
            f"CRM_CUSTOM_INSIGHTS file {path} is not valid:\n"
            + "\n".join(f"- {p}" for p in problems)
        )
    return tuple(entries)


# -- helpers ---------------------------------------------------------------------------------------


def _read(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CustomInsightsError(
            f"CRM_CUSTOM_INSIGHTS names {path}, which cannot be read ({exc.strerror}): "
            "fix the path or unset the variable"
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise CustomInsightsError(
            f"CRM_CUSTOM_INSIGHTS file {path} is not valid YAML{at}"
        ) from None
    if document is None:
        return []
    if not isinstance(document, list):
        raise CustomInsightsError(
            f"CRM_CUSTOM_INSIGHTS file {path} must be a YAML list of entries "
            "(- table: ..., level: ..., fields: [...]); see custom_insights.example.yaml"
        )
    return document


def _messages(exc: ValidationError) -> Iterator[str]:
    """Pydantic's errors as sentences naming the key and what to change."""
    keys = ", ".join(CustomInsight.model_fields)
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            yield f"unknown key {key!r}: an entry has {keys}"
        elif error["type"] == "missing":
            yield f"{key!r} is missing: an entry needs table, level and fields"
        else:
            yield f"{key}: {message}" if key else message


def _duplicate_tables(raw_entries: Sequence) -> list[str]:
    seen: dict[str, list[int]] = {}
    for number, raw in enumerate(raw_entries, 1):
        if isinstance(raw, dict) and isinstance(raw.get("table"), str):
            seen.setdefault(raw["table"], []).append(number)
    return [
        f"table {table} is declared by entries {', '.join(map(str, numbers))}: give each entry "
        "its own table"
        for table, numbers in seen.items()
        if len(numbers) > 1
    ]


def _known(values: tuple[str, ...], known: Iterable[str], what: str) -> tuple[str, ...]:
    known = list(known)
    unknown = [v for v in values if v not in known]
    if unknown:
        hints = [
            f"{v!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            for v in unknown
            for close in [difflib.get_close_matches(v, known, n=1)]
        ]
        raise ValueError(
            f"unknown {what}(s) {', '.join(hints)}: the allowed ones are listed in "
            "crm_pipeline/facebook/fields.py (custom insights)"
        )
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} listed twice: list each once")
    return values


def _combination_problems(entry: CustomInsight) -> list[str]:
    """Meta's documented limits on what an /insights read may combine."""
    problems = []
    rank = _LEVEL_ORDER.index(entry.level)
    for field in entry.fields:
        owner = CUSTOM_OBJECT_FIELDS.get(field)
        if owner is not None and _LEVEL_ORDER.index(owner) > rank:
            problems.append(
                f"fields: {field} does not exist at level {entry.level}: remove it, or set "
                f"level: {owner}"
            )
    chosen = set(entry.breakdowns)
    geo = chosen & set(CUSTOM_GEO_BREAKDOWNS)
    demographic = chosen & set(CUSTOM_DEMOGRAPHIC_BREAKDOWNS)
    if geo and demographic:
        problems.append(
            f"breakdowns: Meta does not combine {' or '.join(sorted(geo))} with "
            f"{' or '.join(sorted(demographic))}: drop one side (country goes with age and "
            "gender), or declare two entries"
        )
    for breakdown, needed in CUSTOM_BREAKDOWN_NEEDS.items():
        if breakdown in chosen and needed not in chosen:
            problems.append(f"breakdowns: {breakdown} needs {needed} beside it: add {needed}")
    not_hourly = [f for f in entry.fields if f in CUSTOM_FIELDS_NOT_HOURLY]
    if chosen & set(CUSTOM_HOURLY_BREAKDOWNS) and not_hourly:
        problems.append(
            f"fields: Meta does not report {', '.join(not_hourly)} with an hourly breakdown: "
            "remove them, or the hourly breakdown"
        )
    return problems


def _snake(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_").removeprefix(TABLE_PREFIX)
