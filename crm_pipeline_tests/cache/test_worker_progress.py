"""The worker's watermark: a deferred whole-table file holds it back until it is rebuilt."""

from crm_pipeline.cache.registry import ANALYTICS_SUMMARY, MARKETING_INSIGHTS
from crm_pipeline.cache.worker.loop import lock_key
from crm_pipeline.cache.worker.progress import Progress


def test_watermark_waits_for_every_file_a_window_made_stale():
    progress = Progress("100")
    progress.owe(MARKETING_INSIGHTS, "100", due=5.0, noticed_at=None)
    progress.since = "120"
    progress.owe(ANALYTICS_SUMMARY, "120", due=3.0, noticed_at=None)
    progress.owe(MARKETING_INSIGHTS, "120", due=9.0, noticed_at=None)  # still owed since 100
    progress.since = "130"
    assert progress.watermark() == "100"
    assert progress.next_due() == 3.0
    assert [d.file for d in progress.due(4.0)] == [ANALYTICS_SUMMARY]
    progress.paid(MARKETING_INSIGHTS)
    assert progress.watermark() == "120"
    progress.paid(ANALYTICS_SUMMARY)
    assert progress.watermark() == "130"


def test_watermark_compares_numbers_not_text():
    progress = Progress("1000")
    progress.owe(MARKETING_INSIGHTS, "999", due=0.0, noticed_at=None)
    assert progress.watermark() == "999"


def test_a_file_owed_to_the_first_window_ever_publishes_nothing():
    progress = Progress(None)
    progress.owe(MARKETING_INSIGHTS, None, due=0.0, noticed_at=None)
    progress.since = "50"
    assert progress.watermark() is None


def test_lock_key_is_stable_per_name_and_a_bigint():
    assert lock_key("cache-worker") == lock_key("cache-worker") != lock_key("other")
    assert -(2**63) <= lock_key("cache-worker") < 2**63
