from crm_pipeline.facebook import validate

DAY = "2026-11-20"


def _row(**over):
    row = {
        "account_id": "1001",
        "campaign_id": "c",
        "adset_id": "s",
        "ad_id": "a",
        "date_start": DAY,
        "date_stop": DAY,
        "impressions": "10",
        "clicks": "1",
        "spend": "1.25",
        "reach": "9",
        "brand_new_meta_field": {"tolerated": True},
    }
    return {**row, **over}


def test_good_insights_pass_and_unknown_fields_are_tolerated():
    checked = validate.check_insights([_row(), _row(ad_id="b", actions=[])], DAY)
    assert len(checked.good) == 2 and not checked.bad


def test_malformed_insights_are_quarantined_with_a_reason():
    rows = [
        _row(spend="12,5"),
        _row(spend="-1"),
        _row(spend="NaN"),
        _row(impressions="1.5"),
        _row(ad_id=""),
        _row(date_start="2026-11-19"),
        _row(actions={"not": "a list"}),
        "not an object",
        _row(),
    ]
    checked = validate.check_insights(rows, DAY)
    assert len(checked.good) == 1
    reasons = [b["reason"] for b in checked.bad]
    assert len(reasons) == 8
    assert any("spend is not a number" in r for r in reasons)
    assert any("missing ad_id" in r for r in reasons)
    assert any("partition day" in r for r in reasons)


def test_leads_conversations_and_messages():
    lead = {
        "id": "l1",
        "created_time": "2026-11-20T10:00:00+0000",
        "field_data": [{"name": "email", "values": ["a@b.c"]}],
    }
    checked = validate.check_leads(
        [lead, {**lead, "created_time": "yesterday"}, {**lead, "field_data": "x"}, {"id": "l2"}]
    )
    assert [r["id"] for r in checked.good] == ["l1"] and len(checked.bad) == 3
    assert not validate.check_conversations([{"id": "t", "updated_time": "nope"}]).good
    assert not validate.check_messages(
        [{"id": "m", "created_time": "2026-11-20T10:00:00+0000"}]
    ).good


def test_parse_meta_time():
    parsed = validate.parse_meta_time("2026-11-20T10:00:00+0000")
    assert parsed.utcoffset().total_seconds() == 0 and parsed.hour == 10
    assert validate.parse_meta_time("2026-11-20T10:00:00") is None  # naive: ambiguous
    assert validate.parse_meta_time(12345) is None


def test_counts_are_plain_ascii_digits_that_postgresql_accepts():
    good = {"ad_id": "1", "adset_id": "2", "campaign_id": "3", "account_id": "4"}
    good.update(date_start="2026-11-02", impressions="10", clicks="0", spend="1.50")
    odd = [
        {**good, "impressions": "12\n"},  # `$` let a trailing newline through
        {**good, "clicks": "\u0663"},  # an Arabic-Indic three: a digit to `\d`, not to bigint
        {**good, "spend": "-1.5"},
        {**good, "spend": "1e400000"},  # finite to Decimal, too big for numeric(18, 4)
        {**good, "spend": "123456789012345"},
    ]
    checked = validate.check_insights([good, *odd], "2026-11-02")
    assert checked.good == [good]
    assert len(checked.bad) == len(odd)
