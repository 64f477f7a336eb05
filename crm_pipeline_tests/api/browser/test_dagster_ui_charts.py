"""Issue 19: the analytics_summary materialisation shows its charts in the Dagster UI, as a user
sees it. `crm-pipeline dev` on the test database (demo CRM data and ad insights), one run of
`analytics_summary` launched through the webserver's GraphQL (as the UI's "Materialize" does),
then the asset's page in headless Chromium: each chart's "[Show Markdown]" opens a dialog whose
<img> is the inline PNG, decoded to real pixels (the UI did not strip the data URI). A
screenshot of each open chart lands in the test's tmp dir; no request leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from crm_pipeline.db.demo_mark import claim_for_demo
from crm_pipeline.demo import seed_demo_crm
from crm_pipeline.orchestrate import local_instance_config
from crm_pipeline_tests.api.browser.conftest import Tab, seed_marketing
from crm_pipeline_tests.test_dev import CLI, _asset_keys, _free_port, _wait

pytestmark = pytest.mark.slow

CHARTS = (
    "chart_revenue_by_month",
    "chart_leads_by_day",
    "chart_cost_per_lead_by_campaign",
    "chart_customers_by_tier",
)
ASSET = "analytics_summary"

# The image in an open Markdown dialog: its source's scheme and what the browser decoded.
_IMAGES = """dialog => [...dialog.querySelectorAll('img')].map(img => ({
  src: img.getAttribute('src').slice(0, 30), complete: img.complete,
  width: img.naturalWidth, height: img.naturalHeight, alt: img.alt}))"""


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def _materialize(url: str, log: Path) -> str:
    """Launch a run of ASSET through the webserver and wait until it succeeded; its id."""
    repos = _graphql(
        url,
        "{ repositoriesOrError { ... on RepositoryConnection"
        " { nodes { name location { name } } } } }",
    )["repositoriesOrError"]["nodes"]
    [repo] = repos
    launched = _graphql(
        url,
        """mutation ($params: ExecutionParams!) {
             launchRun(executionParams: $params) {
               __typename
               ... on LaunchRunSuccess { run { runId } }
               ... on PythonError { message }
               ... on InvalidSubsetError { message }
             }
           }""",
        {
            "params": {
                "selector": {
                    "repositoryLocationName": repo["location"]["name"],
                    "repositoryName": repo["name"],
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [{"path": [ASSET]}],
                },
                "mode": "default",
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = {}

    def done() -> bool:
        status["run"] = _graphql(
            url, "query ($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]["status"]  # fmt: skip
        return status["run"] in ("SUCCESS", "FAILURE", "CANCELED")

    _wait(done, 90, f"run {run_id} of {ASSET}", log)
    assert status["run"] == "SUCCESS", (run_id, status)
    return run_id


@pytest.fixture
def dev_with_demo_data(clean_db, database_url, tmp_path):
    """`crm-pipeline dev` on the test database, holding the demo CRM data and ad insights."""
    with clean_db.begin() as conn:
        claim_for_demo(conn)  # as `crm-pipeline demo` does: dev's emulator may then run on it
    seed_demo_crm(clean_db)
    seed_marketing(clean_db)
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(local_instance_config())
    # Dagster's "Join the community" dialog already dismissed (its Skip writes this file): it
    # would cover the page, and its links lead off this machine.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    dagster_port, api_port = _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))},
        "CRM_DATABASE_URL": database_url,
        "CRM_DATA_DIR": str(tmp_path / "crm"),
        "CRM_CACHE_DIR": str(tmp_path / "cache"),
        "DAGSTER_HOME": str(home),
    }
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CLI, "dev", "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{dagster_port}"
    try:
        _wait(lambda: ASSET in _asset_keys(url), 90, "the Dagster UI to load our definitions", log)
        yield url, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_the_ui_shows_the_analytics_summary_charts(tab: Tab, dev_with_demo_data, tmp_path):
    started = time.monotonic()
    url, log = dev_with_demo_data
    print(f"run {_materialize(url, log)} materialised {ASSET}")

    page = tab.page
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{url}/assets/{ASSET}")
    try:
        shown = _open_charts(page, tmp_path)
    except Exception:
        page.screenshot(path=tmp_path / "failure.png", full_page=True)
        (tmp_path / "failure.html").write_text(page.content())
        print(f"page at failure: {tmp_path / 'failure.png'}, {tmp_path / 'failure.html'}")
        raise

    for chart, images in shown.items():
        assert len(images) == 1, (chart, images)
        [image] = images
        assert image["src"].startswith("data:image/png;base64,"), (chart, image)
        assert image["complete"] and image["width"] > 100 and image["height"] > 50, (chart, image)

    assert tab.foreign == [], tab.foreign
    assert all(r.url.startswith(url) for r in tab.requests), [r.url for r in tab.requests]
    print(f"UI charts test: {time.monotonic() - started:.1f} s after dev was up")


def _open_charts(page, tmp_path: Path) -> dict[str, list[dict]]:
    """Open each chart's Markdown dialog; the images in it, and a screenshot of each."""
    # The latest materialisation's metadata table (Overview tab): one row per entry, its label
    # in the first cell, a "[Show Markdown]" link for a Markdown value.
    label = page.locator("td", has_text=re.compile(r"^chart_\w+$"))
    label.first.wait_for(timeout=30_000)
    charts = sorted({text.strip() for text in label.all_text_contents()})
    assert set(CHARTS) <= set(charts), f"chart entries in the UI: {charts}"
    shown = {}
    for chart in charts:
        row = page.locator("tr", has=page.locator("td", has_text=re.compile(f"^{chart}$")))
        row.first.get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(chart, exact=True).wait_for()  # its title: this entry's dialog
        dialog.locator("img").first.wait_for()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[role=dialog] img')].every(i => i.complete)"
        )
        shown[chart] = dialog.evaluate(_IMAGES)
        shot = tmp_path / f"{chart}.png"
        # Blueprint fades the dialog in: the picture once the transition is over.
        page.locator(".bp5-overlay-enter-done [role=dialog]").wait_for()
        page.screenshot(path=shot, animations="disabled")
        print(f"screenshot: {shot}")
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
    return shown
