"""requirements.lock pins every dependency `make install` takes, inside pyproject's ranges.

`make install` installs with the lock as constraints, so a fresh clone gets the versions CI ran;
`make lock` rewrites it after a range changes. A range the lock does not satisfy (or a direct
dependency missing from it) means the lock is stale.
"""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-") and "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def _direct_requirements() -> list[Requirement]:
    requirements = []
    for pyproject in (ROOT / "pyproject.toml", ROOT / "emulator" / "pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        extras = project.get("optional-dependencies", {}).get("dev", [])
        requirements += [Requirement(r) for r in [*project["dependencies"], *extras]]
    return requirements


def test_every_direct_dependency_is_pinned_inside_its_range():
    pins = _pins()
    problems = []
    for requirement in _direct_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement.name} is not in requirements.lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement.name}=={pins[name]} is outside {requirement.specifier}")
    assert not problems, "run `make lock`: " + "; ".join(problems)


def test_the_lock_names_no_machine_specific_source():
    text = (ROOT / "requirements.lock").read_text()
    assert "--find-links" not in text and "--index-url" not in text and "file://" not in text
