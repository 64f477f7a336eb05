"""The custom insights file (CRM_CUSTOM_INSIGHTS): what loads, what is refused and how it says so,
the request an entry makes, and the rows it keeps."""

from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from crm_pipeline import cli
from crm_pipeline.config import ConfigError, load_settings
from crm_pipeline.defs.facebook.custom_insights import configured_custom_insights
from crm_pipeline.facebook import validate
from crm_pipeline.facebook.custom_insights import (
    CustomInsight,
    CustomInsightsError,
    load_custom_insights,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "custom_insights.example.yaml"
AGE_GENDER = {
    "table": "fb_custom_age_gender",
    "level": "ad",
    "fields": ["impressions", "clicks", "spend", "actions"],
    "breakdowns": ["age", "gender"],
    "action_attribution_windows": ["7d_click", "1d_view"],
}


def _write(tmp_path, entries) -> Path:
    path = tmp_path / "custom_insights.yaml"
    path.write_text(yaml.safe_dump(entries) if not isinstance(entries, str) else entries)
    return path


def test_the_example_file_loads_and_each_entry_names_its_assets():
    entries = load_custom_insights(EXAMPLE)
    assert [e.table for e in entries] == [
        "fb_custom_ad_age_gender",
        "fb_custom_campaign_placements",
        "fb_custom_account_countries",
    ]
    first = entries[0]
    assert (first.raw_asset, first.stream) == (
        "fb_custom_ad_age_gender_raw",
        "custom_ad_age_gender",
    )
    assert first.key_columns == (
        "account_id",
        "campaign_id",
        "adset_id",
        "ad_id",
        "date",
        "age",
        "gender",
    )
    placements = entries[1]
    assert placements.id_columns == ("account_id", "campaign_id")
    assert placements.action_breakdowns == ("action_type",)  # the default
    assert placements.value_kinds == {
        "campaign_name": "text",
        "impressions": "integer",
        "clicks": "integer",
        "spend": "decimal",
        "frequency": "decimal",
    }


def test_no_file_configured_means_no_entries_and_the_setting_reads_the_path(tmp_path):
    assert load_custom_insights(None) == ()
    assert load_settings({}).graph.custom_insights is None
    path = _write(tmp_path, [AGE_GENDER])
    assert load_settings({"CRM_CUSTOM_INSIGHTS": str(path)}).graph.custom_insights == path
    assert load_custom_insights(_write(tmp_path, "")) == ()


def test_an_entry_asks_meta_for_its_level_breakdowns_and_windows():
    entry = CustomInsight.model_validate(AGE_GENDER)
    params = entry.params(date(2026, 11, 18), date(2026, 11, 19), limit=50)
    assert params["level"] == "ad"
    assert params["time_increment"] == "1"
    assert params["time_range"] == {"since": "2026-11-18", "until": "2026-11-19"}
    assert params["breakdowns"] == ["age", "gender"]
    assert params["action_breakdowns"] == ["action_type"]
    assert params["action_attribution_windows"] == ["7d_click", "1d_view"]
    assert params["limit"] == 50
    assert entry.request_fields == (
        "account_id",
        "campaign_id",
        "adset_id",
        "ad_id",
        "impressions",
        "clicks",
        "spend",
        "actions",
    )
    plain = CustomInsight.model_validate(
        {"table": "fb_custom_x", "level": "account", "fields": ["spend"]}
    )
    params = plain.params(date(2026, 11, 18), date(2026, 11, 18))
    assert params["level"] == "account"
    assert "breakdowns" not in params and "action_attribution_windows" not in params


# (change to AGE_GENDER, words the message must contain)
INVALID = [
    (
        {"fields": ["impresions"]},
        ["unknown insights field", "'impresions'", "did you mean 'impressions'"],
    ),
    ({"breakdowns": ["age", "zodiac"]}, ["unknown breakdown", "'zodiac'"]),
    ({"breakdowns": ["region", "age"]}, ["does not combine region with age", "country"]),
    ({"breakdowns": ["dma", "gender"]}, ["does not combine dma with gender"]),
    ({"breakdowns": ["platform_position"]}, ["platform_position needs publisher_platform"]),
    (
        {"fields": ["impressions", "relevance_score"]},
        ["relevance_score", "with any breakdown", "remove"],
    ),
    (
        {"breakdowns": ["hourly_stats_aggregated_by_advertiser_time_zone"], "fields": ["reach"]},
        ["reach", "hourly breakdown"],
    ),
    (
        {"level": "campaign", "breakdowns": [], "fields": ["ad_id", "spend"]},
        ["ad_id does not exist at level campaign", "level: ad"],
    ),
    ({"level": "adset", "fields": ["ad_name"]}, ["ad_name does not exist at level adset"]),
    ({"action_attribution_windows": ["7d_view"]}, ["7d_view", "2026-01-12", "1d_view"]),
    ({"action_attribution_windows": ["28d_view", "1d_click"]}, ["28d_view", "2026-01-12"]),
    ({"action_attribution_windows": ["2d_click"]}, ["unknown attribution window", "2d_click"]),
    ({"time_increment": "monthly"}, ["time_increment", "partitioned by day", "must be 1"]),
    ({"time_increment": 7}, ["time_increment", "partitioned by day"]),
    ({"table": "ad_insights_daily"}, ["fb_custom_", "clash"]),
    ({"table": "fb_custom_Age"}, ["lower_snake_case"]),
    ({"table": "fb_custom_" + "x" * 40}, ["longer than 48"]),
    ({"level": "day"}, ["'day' is not a level", "ad, adset, campaign"]),
    ({"breakdown": ["age"]}, ["unknown key 'breakdown'", "breakdowns"]),
    ({"fields": []}, ["fields"]),
    ({"action_breakdowns": ["action_colour"]}, ["unknown action breakdown", "action_colour"]),
    ({"breakdowns": ["age", "age"]}, ["age listed twice"]),
]


@pytest.mark.parametrize(("change", "words"), INVALID, ids=[str(c) for c, _ in INVALID])
def test_an_invalid_entry_fails_naming_the_file_the_entry_and_the_fix(tmp_path, change, words):
    good = {**AGE_GENDER, "table": "fb_custom_good"}
    path = _write(tmp_path, [good, {**AGE_GENDER, **change}])
    with pytest.raises(CustomInsightsError) as failure:
        load_custom_insights(path)
    message = str(failure.value)
    assert str(path) in message
    assert "entry 2" in message and "entry 1" not in message
    for word in words:
        assert word in message


def test_every_problem_of_the_file_is_listed_at_once(tmp_path):
    path = _write(
        tmp_path,
        [
            AGE_GENDER,
            {**AGE_GENDER, "breakdowns": ["zodiac"]},
            {**AGE_GENDER, "table": "fb_custom_other", "level": "campaign", "fields": ["ad_id"]},
        ],
    )
    with pytest.raises(CustomInsightsError) as failure:
        load_custom_insights(path)
    message = str(failure.value)
    assert "entry 2 (table fb_custom_age_gender): breakdowns: unknown breakdown" in message
    assert "entry 3 (table fb_custom_other)" in message and "ad_id" in message
    assert "table fb_custom_age_gender is declared by entries 1, 2" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("table: fb_custom_x\nlevel: ad\n", ["must be a YAML list"]),
        ("- table: [unclosed\n", ["not valid YAML", "line"]),
        ("- just a string\n", ["entry 1", "must be a mapping"]),
        ("- level: ad\n  fields: [spend]\n", ["'table' is missing"]),
    ],
)
def test_a_malformed_file_fails_with_what_is_wrong(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(CustomInsightsError) as failure:
        load_custom_insights(path)
    for word in words:
        assert word in str(failure.value)


def test_the_definitions_raise_a_wrong_file_as_a_config_error(tmp_path):
    path = _write(tmp_path, [{**AGE_GENDER, "action_attribution_windows": ["7d_view"]}])
    with pytest.raises(ConfigError, match="entry 1 \\(table fb_custom_age_gender\\)"):
        configured_custom_insights(path)
    assert configured_custom_insights(None) == ()


def test_a_missing_file_fails_naming_the_setting(tmp_path):
    with pytest.raises(CustomInsightsError, match="CRM_CUSTOM_INSIGHTS names .*nowhere.yaml"):
        load_custom_insights(tmp_path / "nowhere.yaml")


def test_table_rows_key_a_missing_breakdown_as_empty_text():
    entry = CustomInsight.model_validate(AGE_GENDER)
    raw = pa.table(
        {
            name: pa.array(values, pa.string())
            for name, values in {
                "account_id": ["1001", "1001"],
                "campaign_id": ["c", "c"],
                "adset_id": ["s", "s"],
                "ad_id": ["a", "a"],
                "date_start": ["2026-11-18"] * 2,
                "date_stop": ["2026-11-18"] * 2,
                "age": ["18-24", None],
                "gender": ["female", "male"],
                "impressions": ["10", "5"],
                "clicks": ["1", "0"],
                "spend": ["1.50", "0.75"],
                "actions": ['[{"action_type":"link_click","value":"1","7d_click":"1"}]', None],
            }.items()
        }
    )
    rows = entry.table_rows(raw)
    assert rows.column_names == [
        "account_id",
        "campaign_id",
        "adset_id",
        "ad_id",
        "date",
        "age",
        "gender",
        "impressions",
        "clicks",
        "spend",
        "actions",
    ]
    assert rows["age"].to_pylist() == ["18-24", ""]
    with pytest.raises(ValueError, match="materialise fb_custom_age_gender_raw"):
        entry.table_rows(raw.drop_columns(["gender"]))


def test_custom_rows_are_checked_for_their_level_ids_day_and_value_kinds():
    entry = CustomInsight.model_validate({**AGE_GENDER, "level": "campaign"})
    good = {"account_id": "1", "campaign_id": "2", "date_start": "2026-11-18", "spend": "1.5"}
    rows = [
        good,
        {**good, "campaign_id": ""},
        {**good, "date_start": "2026-11-17"},
        {**good, "impressions": "12.5"},
        {**good, "spend": "abc"},
        {**good, "actions": "not a list"},
        {**good, "ad_id": None},  # no ad id at campaign level: fine
    ]
    checked = validate.check_custom_insights(
        rows, "2026-11-18", entry.id_columns, entry.value_kinds
    )
    assert checked.good == [good, {**good, "ad_id": None}]
    assert [b["reason"] for b in checked.bad] == [
        "missing campaign_id",
        "date_start '2026-11-17' is not the partition day 2026-11-18",
        "impressions is not a non-negative integer: '12.5'",
        "spend is not a number: 'abc'",
        "actions is not a list or an object",
    ]


def test_config_check_reads_the_file_and_fails_on_a_wrong_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)  # no API key count: settings only
    monkeypatch.setenv("CRM_CUSTOM_INSIGHTS", str(_write(tmp_path, [AGE_GENDER])))
    assert cli.main(["config", "check"]) == 0
    assert "custom insights: fb_custom_age_gender" in capsys.readouterr().out
    wrong = {**AGE_GENDER, "action_attribution_windows": ["7d_view"]}
    monkeypatch.setenv("CRM_CUSTOM_INSIGHTS", str(_write(tmp_path, [wrong])))
    assert cli.main(["config", "check"]) == 2
    error = capsys.readouterr().err
    assert "configuration error: CRM_CUSTOM_INSIGHTS file" in error
    assert "entry 1 (table fb_custom_age_gender)" in error and "2026-01-12" in error
