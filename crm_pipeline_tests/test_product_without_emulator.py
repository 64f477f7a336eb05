"""The product works without the Graph API emulator: it is not in the product's wheel, and with
`import graph_emulator` failing the definitions load, the CLI runs, and asking for the emulator
is one clear configuration error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from crm_pipeline.local_emulator import EMULATOR_MISSING

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Installed first in each child: `import graph_emulator` fails as if the package were missing.
WITHOUT_EMULATOR = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class NoEmulator(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "graph_emulator":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoEmulator())
    for name in [n for n in sys.modules if n.partition(".")[0] == "graph_emulator"]:
        del sys.modules[name]
    try:
        import graph_emulator
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker does not work")
    """
)


def _without_emulator(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "FB_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EMULATOR + textwrap.dedent(code)],
        env={**base, "CRM_DATA_DIR": str(tmp_path / "data"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_wheel_holds_no_emulator(tmp_path):
    # Built from a copy: an in-tree build would write build/ and egg-info into the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".crm", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    assert (source / "emulator" / "graph_emulator" / "__init__.py").exists()  # it is there
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # `pip wheel --no-build-isolation` builds with this venv's setuptools: bdist_wheel needs
    # setuptools >= 70.1 (older ones need the `wheel` package's, which wheel >= 0.46 dropped).
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("crm_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "crm_pipeline/definitions.py" in names
    assert [n for n in names if "graph_emulator" in n.split("/")[0]] == []
    # The dashboard and docs files are package data: an installed wheel serves them too.
    from crm_pipeline.api import dashboard, docs_page

    served = [*dashboard.PAGE.files.values(), *dashboard.ASSETS.files.values()]
    served += [*docs_page.ASSETS.files.values(), "vendor/chart.js/LICENSE.md"]
    served += ["vendor/swagger-ui/LICENSE", "vendor/swagger-ui/NOTICE"]
    assert {f"crm_pipeline/api/static/{path}" for path in served} <= set(names)


def test_definitions_and_cli_need_no_emulator(tmp_path):
    result = _without_emulator(
        """
        import crm_pipeline.definitions
        import crm_pipeline.cli

        assert not any(n.startswith("graph_emulator") for n in sys.modules)
        try:
            crm_pipeline.cli.main(["--help"])
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: crm-pipeline" in result.stdout


def test_asking_for_the_emulator_without_it_is_a_clear_config_error(tmp_path):
    result = _without_emulator(
        """
        import crm_pipeline.definitions  # loading never starts or asks an emulator
        from crm_pipeline.cli import main

        sync = ["sync", "facebook", "--since", "2026-06-01", "--until", "2026-06-01"]
        assert main(sync) == 2
        assert main(["emulator"]) == 2
        """,
        tmp_path,
        FB_GRAPH_URL="emulator",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(f"crm-pipeline: configuration error: {EMULATOR_MISSING}") == 2
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before any database was started
