"""Structured logs: JSON lines that parse, carry extras, and never carry a secret."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from crm_pipeline.logs import JsonFormatter, RedactingTextFormatter, redact

CLI = str(Path(sys.executable).with_name("crm-pipeline"))


def _record(msg: str, *args, **extra) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "crm_pipeline.test", "levelname": "INFO", "msg": msg, "args": args}
    )
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_level_logger_message_and_extras():
    line = JsonFormatter().format(_record("synced %d rows", 42, asset="ad_insights_daily"))
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "crm_pipeline.test"
    assert entry["message"] == "synced 42 rows"
    assert entry["asset"] == "ad_insights_daily"
    assert entry["ts"].endswith("+00:00")


def test_secrets_are_masked_in_both_formats():
    message = (
        "GET https://graph.example/v26.0/act_1/insights?access_token=EAAB-secret-token&limit=5"
        " db=postgresql://crm:pg-s3cret@db.internal:5432/crm"
    )
    for formatter in (JsonFormatter(), RedactingTextFormatter("%(message)s")):
        out = formatter.format(_record(message, url="x?appsecret_proof=abc123def"))
        assert "EAAB-secret-token" not in out
        assert "pg-s3cret" not in out
        assert "abc123def" not in out
        assert "limit=5" in out and "db.internal" in out
    assert redact("hub.verify_token=tok&x=1") == "hub.verify_token=***&x=1"


def test_cli_logs_json_when_asked_and_rejects_an_unknown_format(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_"))},
        "CRM_LOG_FORMAT": "json",
        "CRM_LOG_LEVEL": "INFO",
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = subprocess.run([CLI, "db", "upgrade"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e["logger"].startswith("crm_pipeline") for e in entries), lines

    bad = subprocess.run(
        [CLI, "db", "upgrade"], env={**env, "CRM_LOG_FORMAT": "xml"}, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "CRM_LOG_FORMAT" in bad.stderr
