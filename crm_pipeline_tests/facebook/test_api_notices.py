"""Meta's version warnings, the reach throttle header and the errors only a change can fix:
unit tests on real header shapes and real SDK error objects."""

from __future__ import annotations

import json
import random

import pytest
from facebook_business.exceptions import FacebookRequestError
from requests.structures import CaseInsensitiveDict

from crm_pipeline.facebook.api_notices import MAX_NOTICE_CHARS, ApiNotices, read_notices
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.error_kinds import (
    FATAL_KINDS,
    classify_error,
    latest_version,
    refused_fields,
)
from crm_pipeline.facebook.error_messages import explain
from crm_pipeline.facebook.errors import GraphApiError
from crm_pipeline.facebook.governor import RateLimitGovernor
from crm_pipeline.facebook.governor_settings import GovernorSettings
from crm_pipeline.facebook.ids import sdk_api_version
from crm_pipeline.facebook.usage_headers import REACH_THROTTLE, parse_usage
from crm_pipeline_tests.facebook.fakes import FakeTime

WARNING = (
    "The call is from a version of the Ads API which will be deprecated on 2027-02-10. "
    "Please upgrade to v27.0."
)
EXPIRED = (
    "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest "
    "version: v27.0."
)
REFUSED = (
    "(#100) relevance_score is not valid for fields param. please check "
    "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/"
)
# The other headers as Meta sends them next to the reach throttle.
APP_USAGE = json.dumps({"call_count": 5, "total_cputime": 2, "total_time": 3})
ACCOUNT_USAGE = json.dumps(
    {"acc_id_util_pct": 9.67, "reset_time_duration": 100, "ads_api_access_tier": "standard_access"}
)


def fb_error(code: int, message: str, status: int = 400, headers=None) -> FacebookRequestError:
    """A real SDK error, as FacebookResponse.error() builds it from Meta's body."""
    body = {"error": {"message": message, "type": "OAuthException", "code": code}}
    context = {"method": "GET", "path": "x", "params": {}}
    return FacebookRequestError(
        "Call was not successful", context, status, headers or {}, json.dumps(body)
    )


# -- the reach throttle ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["x-Fb-Ads-Insights-Reach-Throttle", "x-fb-ads-insights-reach-throttle"]
)
def test_the_reach_throttle_counts_toward_usage_in_any_case(name):
    headers = CaseInsensitiveDict(
        {
            "X-App-Usage": APP_USAGE,
            "X-Ad-Account-Usage": ACCOUNT_USAGE,
            name: json.dumps({"acc_id_util_pct": 80, "reset_time_duration": 3600}),
        }
    )
    usage = parse_usage(headers)
    assert usage.by_header == {
        "x-app-usage": 5.0,
        "x-ad-account-usage": 9.67,
        REACH_THROTTLE: 80.0,
    }
    assert usage.pct == 80.0
    # The reach quota resets over hours, not the ad account's 100 seconds.
    assert usage.reset_seconds == 3600.0


@pytest.mark.parametrize(
    "value", ["not json", json.dumps({"acc_id_util_pct": "n/a"}), json.dumps([1, 2]), ""]
)
def test_a_malformed_reach_throttle_is_ignored(value):
    usage = parse_usage({"x-fb-ads-insights-reach-throttle": value, "X-App-Usage": APP_USAGE})
    assert usage.by_header == {"x-app-usage": 5.0}
    assert usage.pct == 5.0


def test_the_governor_paces_on_the_reach_throttle():
    fake = FakeTime(start=0.0)
    governor = RateLimitGovernor(
        GovernorSettings(jitter=0.0), sleep=fake.sleep, clock=fake.clock, rng=random.Random(1)
    )
    low = {"X-App-Usage": APP_USAGE}
    governor.observe(low)
    assert governor.slow_down_seconds() == 0
    governor.observe({**low, "x-Fb-Ads-Insights-Reach-Throttle": '{"acc_id_util_pct": 95}'})
    assert governor.usage_pct == 95
    assert governor.slow_down_seconds() > 0


# -- version and deprecation notices --------------------------------------------------------------


def test_notices_are_read_from_every_warning_header_in_any_case():
    headers = CaseInsensitiveDict(
        {
            "x-ad-api-version-warning": f"  {WARNING}\r\n ",
            "Deprecation": "@1796860800",
            "Sunset": "Wed, 10 Feb 2027 00:00:00 GMT",
            "X-App-Usage": APP_USAGE,
            "facebook-api-version": "v25.0",
        }
    )
    assert read_notices(headers) == [
        WARNING,
        "Deprecation: @1796860800",
        "Sunset: Wed, 10 Feb 2027 00:00:00 GMT",
    ]
    assert read_notices({"X-App-Usage": APP_USAGE}) == []
    assert read_notices(None) == []


def test_notices_are_kept_once_each_and_reported_once():
    notices = ApiNotices()
    for _ in range(5):  # every page of a sync carries the same warning
        notices.observe({"X-Ad-Api-Version-Warning": WARNING})
    assert notices.notices == [WARNING]
    assert notices.unreported() == [WARNING]
    assert notices.unreported() == []
    notices.observe({"Sunset": "Wed, 10 Feb 2027 00:00:00 GMT"})
    assert notices.unreported() == ["Sunset: Wed, 10 Feb 2027 00:00:00 GMT"]
    assert notices.notices == [WARNING, "Sunset: Wed, 10 Feb 2027 00:00:00 GMT"]


def test_notices_are_bounded_in_number_and_length():
    notices = ApiNotices(limit=3)
    for n in range(5):
        notices.add(f"warning {n}")
    notices.observe({"X-Ad-Api-Version-Warning": "x" * 10_000})
    assert notices.notices == ["warning 0", "warning 1", "warning 2"]
    assert notices.dropped == 3
    [long] = read_notices({"X-Ad-Api-Version-Warning": "x" * 10_000})
    assert len(long) == MAX_NOTICE_CHARS


def test_notices_are_redacted_before_they_are_kept():
    secret = "EAAsecret-token"
    notices = ApiNotices(lambda text: text.replace(secret, "[REDACTED]"))
    notices.observe({"Deprecation": f"see https://example.test/?access_token={secret}"})
    assert notices.notices == ["Deprecation: see https://example.test/?access_token=[REDACTED]"]


# -- errors no retry can fix -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (fb_error(2635, EXPIRED), "expired_version"),
        (fb_error(12, "You are calling a deprecated version of the Graph API"), "expired_version"),
        (fb_error(2500, "Unknown path components: /act_1001/insights"), "unknown_path"),
        (fb_error(100, REFUSED), "refused_field"),
        (fb_error(100, "(#100) Tried accessing nonexisting field (foo) on node type (Ad)"),
         "refused_field"),
        (fb_error(100, "(#100) Invalid parameter"), "fatal"),
    ],
)  # fmt: skip
def test_version_and_field_errors_are_fatal_kinds(error, kind):
    failure = classify_error(error)
    assert failure.kind == kind
    assert failure.kind in FATAL_KINDS


def test_the_newest_version_is_read_from_metas_words():
    assert latest_version(EXPIRED) == "v27.0"
    assert latest_version("use v9.0 or v10.0 or v27.1") == "v27.1"
    assert latest_version("Please update to the latest version.") is None


def test_an_expired_version_names_it_the_fix_and_the_sdks_own():
    text = explain(2635, EXPIRED, "HTTP 400, code=2635", "v24.0")
    assert text.settled
    sdk = sdk_api_version()
    assert "Graph API version v24.0 has expired" in text.text
    assert f"set FB_API_VERSION to v27.0 (or unset it to use the SDK's own, {sdk})" in text.text
    assert "upgrade facebook-business" in text.text
    # The SDK's own version expired: unsetting would not help, so it is not suggested.
    own = explain(2635, EXPIRED, "HTTP 400, code=2635", sdk).text
    assert "unset" not in own and "set FB_API_VERSION to v27.0 and upgrade" in own


def test_an_unknown_version_is_named():
    text = explain(2500, "Unknown path components: /act_1/insights", "HTTP 400", "v99.0")
    assert text.settled
    assert "Graph API version v99.0 is not one Meta serves" in text.text
    # Against the SDK's own version, a 2500 is an unknown path, not a version problem.
    path = explain(2500, "Unknown path components: /act_1/nope", "HTTP 400", sdk_api_version())
    assert "does not know this path" in path.text


def test_a_refused_field_is_named_with_where_it_comes_from():
    text = explain(100, REFUSED, "HTTP 400, code=100", "v26.0")
    assert text.settled
    assert "Meta refused the field 'relevance_score' at v26.0" in text.text
    several = "(#100) relevance_score, social_spend are not valid for fields param. please check"
    assert refused_fields(100, several) == ("relevance_score", "social_spend")
    assert "the fields 'relevance_score', 'social_spend'" in explain(100, several, "", "v26.0").text
    nonexisting = "(#100) Tried accessing nonexisting field (rel_score) on node type (AdAccount)"
    assert refused_fields(100, nonexisting) == ("rel_score",)
    assert refused_fields(100, "(#100) Invalid parameter") == ()
    assert refused_fields(2500, REFUSED) == ()  # only code 100 is a refused field
    assert "remove it from crm_pipeline/facebook/fields.py or from the custom insights" in text.text


def test_settled_errors_are_never_retryable_even_if_meta_says_transient():
    client = GraphClient("http://127.0.0.1:9", "EAAsecret-token", api_version="v24.0")

    def fails(code: int, message: str, status: int = 400):
        def call():
            body = {"error": {"message": message, "code": code, "is_transient": True}}
            raise FacebookRequestError("Call was not successful", {}, status, {}, json.dumps(body))

        with pytest.raises(GraphApiError) as caught:
            client.request(call)
        return caught.value

    assert not fails(2635, EXPIRED).retryable
    assert not fails(100, REFUSED).retryable
    assert not fails(2500, "Unknown path components: /act_1/insights").retryable
    # Other errors keep Meta's word.
    assert fails(100, "(#100) Invalid parameter").retryable
