"""Warnings are silenced one at a time, by message and emitting module, never wholesale.

Dagster announces with DeprecationWarnings what its next release removes: we want to see them,
and fix our usage, before an upgrade rather than after it breaks.
"""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPRECATIONS = {"DeprecationWarning", "PendingDeprecationWarning", "FutureWarning"}
OURS = {"dagster", "crm_pipeline", "graph_emulator"}  # deprecations there are ours to fix


def _pytest_filters() -> list[list[str]]:
    """The `filterwarnings` entries of pyproject.toml, split into their five fields."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entries = config["tool"]["pytest"]["ini_options"]["filterwarnings"]
    return [(entry.split(":") + [""] * 5)[:5] for entry in entries]


def test_pytest_filters_name_what_they_silence():
    for action, message, category, module, _line in _pytest_filters():
        if action != "ignore":
            continue
        entry = ":".join([action, message, category, module])
        assert message or module, f"{entry}: silences a whole category"
        if category in DEPRECATIONS or not category:
            assert module and module.split(".")[0] not in OURS, f"{entry}: name its emitter"


def _filter_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted((ROOT / "crm_pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if isinstance(func, ast.Attribute) and func.attr in ("filterwarnings", "simplefilter"):
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def test_product_warning_filters_name_message_and_category():
    calls = _filter_calls()
    assert calls, "the scan finds the filters the product installs"
    for where, call in calls:
        assert call.func.attr == "filterwarnings", f"{where}: simplefilter silences everything"
        keywords = {k.arg: k.value for k in call.keywords}
        assert {"message", "category"} <= keywords.keys(), where
        category = keywords["category"]
        name = category.attr if isinstance(category, ast.Attribute) else category.id
        assert name not in DEPRECATIONS or "module" in keywords, f"{where}: name its emitter"


def test_loading_the_code_location_uses_no_deprecated_api():
    """Every deprecation raised while our modules load (Dagster's above all) is an error here;
    only third-party ones silenced by module in pyproject.toml are let through."""
    flags = ["-W", "error::DeprecationWarning", "-W", "error::PendingDeprecationWarning"]
    for action, message, category, module, _line in _pytest_filters():
        if action == "ignore" and category in DEPRECATIONS and module:
            flags += ["-W", f"ignore:{message}:{category}:{module}"]
    code = "import crm_pipeline.definitions, crm_pipeline.orchestrate, crm_pipeline.cli"
    done = subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
