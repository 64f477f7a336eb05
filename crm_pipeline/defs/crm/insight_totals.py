"""`matches_account_totals`: do the ad rows of `ad_insights_daily` add up to Meta's own totals?

Evaluated by every materialisation of `ad_insights_daily`, over the run's account-days, after
they are committed: for each, Meta's level=account totals (`ad_account_insights_daily`, landed
by the same run's raw asset) against the sum of our ad-level rows, spend to the cent,
impressions and clicks. It fails naming the days and accounts that differ, with both numbers
of each difference in its metadata. The comparison itself is `db/insight_totals.py`.
"""

from collections.abc import Iterable

import dagster as dg
from sqlalchemy import Connection

from crm_pipeline.db.insight_totals import differing_totals
from crm_pipeline.facebook.ids import account_node

CHECK_NAME = "matches_account_totals"
_SHOWN = 50  # differences (and unchecked account-days) listed in the metadata

matches_account_totals = dg.AssetCheckSpec(
    CHECK_NAME,
    asset="ad_insights_daily",
    description=(
        "For each account and day of the run, the sum of the ad rows (spend to the cent, "
        "impressions, clicks) equals Meta's level=account totals of the same day, read with "
        "the same time range and status filter. A difference means ad rows went missing or "
        "stale between Meta and the table."
    ),
)


def _labels(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{account_node(account)}/{day}" for account, day in sorted(set(pairs))]


def account_totals_result(
    conn: Connection,
    compared: list[tuple[str, str]],
    unchecked: list[tuple[str, str]],
) -> dg.AssetCheckResult:
    """The check's verdict on the account-days (Meta's account id, ISO day) of `compared`;
    `unchecked` are those with no landed account totals to compare with (files landed before
    the totals were read, or totals quarantined)."""
    differences = differing_totals(conn, compared)
    days = sorted({d.date.isoformat() for d in differences})
    accounts = sorted({account_node(d.account_id) for d in differences})
    if differences:
        description = (
            f"The ad rows do not add up to Meta's account totals on {', '.join(days)} "
            f"(account {', '.join(accounts)})."
        )
    elif compared:
        description = (
            f"The ad rows of {len(set(compared))} account-day(s) add up to Meta's account totals."
        )
    else:
        description = "No account totals landed for these account-days: nothing to compare."
    return dg.AssetCheckResult(
        asset_key="ad_insights_daily",
        check_name=CHECK_NAME,
        passed=not differences,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "compared_account_days": len(set(compared)),
            "differing_account_days": len(differences),
            "days": dg.MetadataValue.json(days),
            "accounts": dg.MetadataValue.json(accounts),
            "differences": dg.MetadataValue.json(
                [{**d.as_json(), "account": account_node(d.account_id)} for d in differences][
                    :_SHOWN
                ]
            ),
            "unchecked_account_days": dg.MetadataValue.json(_labels(unchecked)[:_SHOWN]),
        },
    )
