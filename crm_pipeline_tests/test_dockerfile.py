"""The repo-root Dockerfile: the image every deployed process runs, built from the lock.

No image is built here (no container engine, no registry), so this reads the file as Docker does
and checks what a build or a pod start would otherwise find out late:

- two stages: a build stage installs the package and its locked dependencies into a venv, a
  slim runtime stage only copies that venv in;
- every install comes from requirements.lock with its hashes, uv at the lock's version too, and
  the product only (no dev extras, no emulator);
- the runtime runs as a non-root numeric user, the one deploy/ runs its pods as;
- every command the image runs exists: its default command (`dagster api grpc`, exactly as
  Dagster's Helm chart starts the code location, on a module exposing our `defs`), the usage it
  documents and the commands deploy/ gives it (console scripts of [project.scripts] whose
  arguments our CLI's parser accepts);
- deploy/ names one image, and .dockerignore sends the builder what it copies and nothing else.
"""

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path

import click
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from crm_pipeline.cli import build_parser
from crm_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
LOCK = "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def _instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions, stage, pending = [], "", ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            words = args.split()
            stage = words[-1] if len(words) == 3 and words[1].upper() == "AS" else ""
        instructions.append(Instruction(stage, keyword.upper(), args.strip()))
    return instructions


def _stages() -> list[str]:
    """The stages in order ("" holds the ARGs before the first FROM, and is not one)."""
    return [stage for stage in dict.fromkeys(i.stage for i in _instructions()) if stage]


def _in(stage: str, keyword: str) -> list[str]:
    return [i.args for i in _instructions() if i.stage == stage and i.keyword == keyword]


def _env(stage: str) -> dict[str, str]:
    pairs = [word.split("=", 1) for args in _in(stage, "ENV") for word in shlex.split(args)]
    return dict(pairs)


def _shell_commands(stage: str) -> list[list[str]]:
    """Each simple command of the stage's RUN lines (split at && outside quotes), as argv."""
    commands = []
    for args in _in(stage, "RUN"):
        lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command = []
        for token in [*lexer, "&&"]:
            if token == "&&":
                commands.append(command)
                command = []
            else:
                command.append(token)
    return commands


def _installs(stage: str) -> list[list[str]]:
    return [
        argv for argv in _shell_commands(stage) if "install" in argv and "pip" in " ".join(argv)
    ]


def _default_command() -> list[str]:
    [cmd] = _in(_stages()[-1], "CMD")
    return json.loads(cmd)  # exec form: no shell between Kubernetes' signals and the process


def _documented_usage() -> tuple[set[str], list[list[str]]]:
    """The image names and the commands of the `docker build` / `docker run` lines in its header."""
    images, commands = set(), []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.lstrip("# ").split()
        if words[:2] == ["docker", "build"]:
            images.add(words[words.index("-t") + 1])
        elif words[:2] == ["docker", "run"]:
            images.add(words[2])
            commands.append(words[3:])
    return images, commands


def _helm_location() -> dict:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    [location] = values["dagster-user-deployments"]["deployments"]
    return location


def _chart_code_server_command(location: dict) -> list[str]:
    """The container args Dagster's user-deployments chart renders for `dagsterApiGrpcArgs`."""
    port = str(location["port"])
    return ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", port, *location["dagsterApiGrpcArgs"]]


def _assert_command_exists(argv: list[str]) -> None:
    """argv names a console script the image has, with arguments its parser accepts."""
    program, *args = argv
    if program == "crm-pipeline":
        assert PYPROJECT["project"]["scripts"][program] == "crm_pipeline.cli:main"
        try:
            build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"`crm-pipeline` does not accept {args}")
    elif program == "dagster":
        _assert_dagster_command_exists(args)
    else:
        pytest.fail(f"{program} is not a console script of the image")


def _assert_dagster_command_exists(args: list[str]) -> None:
    from dagster._cli import cli

    # `dagster` is a console script of a runtime dependency, so it is in the image.
    scripts = metadata.distribution("dagster").entry_points.select(group="console_scripts")
    assert scripts["dagster"].value == "dagster._cli:main"
    assert any(r.startswith("dagster>=") for r in PYPROJECT["project"]["dependencies"])
    command, rest = cli, list(args)
    while isinstance(command, click.Group):
        name, *rest = rest
        command = command.get_command(click.Context(command), name)
        assert command is not None, f"`dagster` has no command {args}"
    try:
        params = command.make_context(command.name, rest).params
    except click.UsageError as exc:
        pytest.fail(f"`dagster {' '.join(args)}`: {exc}")
    if params.get("module_name"):  # a code server: the module must load and expose our defs
        module = import_module(params["module_name"])
        assert getattr(module, params["attribute"]) is defs


def test_a_build_stage_and_a_slim_runtime_that_only_copies_its_venv():
    stages = _stages()
    assert len(stages) == 2 and all(stages), f"two named stages, not {stages}"
    build, runtime = stages
    [base] = [args.split("=", 1)[1] for args in _in("", "ARG") if args.startswith("PYTHON_IMAGE=")]
    assert "slim" in base
    assert (
        _in(build, "FROM")[0].split()[0] == _in(runtime, "FROM")[0].split()[0] == "${PYTHON_IMAGE}"
    )
    # The image's Python is one the package (and the lock, compiled from 3.11 up) supports.
    python = re.match(r"python:(\d+\.\d+)", base).group(1)
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python)

    [venv] = [a for a in _in(build, "RUN") if a.startswith("python -m venv --without-pip")]
    venv = venv.split()[-1]
    assert _in(runtime, "COPY") == [f"--from={build} {venv} {venv}"]
    assert _env(runtime)["PATH"].startswith(f"{venv}/bin:")
    assert not _installs(runtime), "the runtime stage installs nothing: it copies the venv"
    assert not _in(runtime, "ENTRYPOINT"), "the chart's and the run launcher's args replace CMD"


def test_every_install_comes_from_the_lock_with_hashes():
    build = _stages()[0]
    assert f"{LOCK} ./" in _in(build, "COPY")
    installs = _installs(build)
    assert installs, "the build stage installs the package"
    for argv in installs:
        if argv[0].endswith("/pip"):  # bootstrapping uv: the lock's own entry, hashes and all
            assert "--require-hashes" in argv and "--no-deps" in argv
            [source] = [a for a in _shell_commands(build) if a[0] == "awk"]
            assert LOCK in source
        else:  # uv: dependencies pinned and hash-checked by the lock, or none at all
            assert argv[0].endswith("/uv") and argv[1:3] == ["pip", "install"]
            assert ("--require-hashes" in argv and argv[argv.index("-c") + 1] == LOCK) or (
                "--no-deps" in argv and argv[argv.index("--build-constraint") + 1] == LOCK
            ), argv
        assert not [a for a in argv if "[dev]" in a or "emulator" in a], "the product only"
    # The package itself is installed (not just its dependencies), not editable.
    assert any(argv[-1] == "." and "-e" not in argv for argv in installs)
    assert any(argv[-2:] == ["-r", "pyproject.toml"] for argv in installs)


def test_the_uv_bootstrap_reads_the_lock_like_make_does():
    """The Makefile and the Dockerfile take uv's pin and hashes out of the lock with one program."""
    program = re.compile(r"awk '([^']+)'")
    [in_makefile] = program.findall((ROOT / "Makefile").read_text())
    [in_dockerfile] = program.findall(DOCKERFILE.read_text())
    assert in_makefile == in_dockerfile
    extracted = subprocess.run(
        ["awk", in_dockerfile, str(ROOT / LOCK)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert re.fullmatch(r"uv==[\w.]+ \\", extracted[0]), extracted[:1]
    assert len(extracted) > 1 and all(line.strip().startswith("--hash=") for line in extracted[1:])


def test_the_runtime_runs_as_a_non_root_numeric_user():
    runtime = _stages()[-1]
    user = _in(runtime, "USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), f"USER {user}"
    [useradd] = [argv for argv in _shell_commands(runtime) if argv[0] == "useradd"]
    assert useradd[useradd.index("--uid") + 1] == uid and useradd[useradd.index("--gid") + 1] == gid
    # DAGSTER_HOME (where the instance ConfigMap is mounted) is the user's to write.
    home = _env(runtime)["DAGSTER_HOME"]
    assert ["chown", f"{uid}:{gid}", home] in _shell_commands(runtime)


def test_the_default_command_is_the_code_server_the_helm_chart_starts():
    location = _helm_location()
    assert _default_command() == _chart_code_server_command(location)
    _assert_command_exists(_default_command())
    assert str(location["port"]) in _in(_stages()[-1], "EXPOSE")[0].split()


@pytest.mark.parametrize("usage", _documented_usage()[1], ids=" ".join)
def test_every_documented_command_exists(usage):
    _assert_command_exists(usage)


def test_the_documented_usage_covers_the_api_and_the_worker():
    commands = _documented_usage()[1]
    assert ["crm-pipeline", "serve", "--host", "0.0.0.0"] in commands
    assert ["crm-pipeline", "cache-worker"] in commands


def test_deploy_runs_one_image_as_its_user():
    location = _helm_location()
    image = f"{location['image']['repository']}:{location['image']['tag']}"
    assert _documented_usage()[0] == {image}
    worker_values = yaml.safe_load((DEPLOY / "helm" / "cache-worker" / "values.yaml").read_text())
    assert worker_values["image"] == location["image"]
    manifest = yaml.safe_load((DEPLOY / "k8s" / "cache-worker.yaml").read_text())
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image

    # Every command deploy/ gives the image exists in it.
    template = (DEPLOY / "helm" / "cache-worker" / "templates" / "deployment.yaml").read_text()
    _assert_command_exists(yaml.safe_load(re.search(r"command:\s*(\[.*\])", template).group(1)))
    _assert_command_exists(container["command"])

    # The instance is mounted where the image's DAGSTER_HOME points.
    home = _env(_stages()[-1])["DAGSTER_HOME"]
    assert worker_values["dagsterInstance"]["home"] == home
    assert {"name": "DAGSTER_HOME", "value": home} in container["env"]

    # Every pod runs as the image's user.
    uid, gid = (int(n) for n in _in(_stages()[-1], "USER")[-1].split(":"))
    helm = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    run_pods = helm["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    k8s_runs = yaml.safe_load((DEPLOY / "k8s" / "dagster.yaml").read_text())["run_launcher"]
    snake = k8s_runs["config"]["run_k8s_config"]["pod_spec_config"]["security_context"]
    contexts = [
        location["podSecurityContext"],
        run_pods["securityContext"],
        worker_values["podSecurityContext"],
        manifest["spec"]["template"]["spec"]["securityContext"],
        {"runAsNonRoot": snake["run_as_non_root"], "runAsUser": snake["run_as_user"]}
        | {"runAsGroup": snake["run_as_group"], "fsGroup": snake["fs_group"]},
    ]
    expected = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid}
    assert all(context == expected for context in contexts), contexts


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (exclude, regex), matched like Docker: last match wins, and a pattern
    matching a folder matches everything in it."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        for token in re.findall(r"\*\*/?|\*|\?|\[[^]]*\]|[^*?[]+", glob):
            if token.startswith("**"):
                regex += "(.*/)?" if token.endswith("/") else ".*"
            elif token == "*":
                regex += "[^/]*"
            elif token == "?":
                regex += "[^/]"
            elif token.startswith("["):
                regex += token
            else:
                regex += re.escape(token)
        patterns.append((exclude, re.compile(rf"{regex}(/.*)?")))
    return patterns


def _ignored(path: str) -> bool:
    ignored = False
    for exclude, pattern in _dockerignore_patterns():
        if pattern.fullmatch(path):
            ignored = exclude
    return ignored


def test_the_build_context_is_what_the_dockerfile_copies():
    sources = [
        word
        for args in _in(_stages()[0], "COPY")
        for word in args.split()[:-1]
        if not word.startswith("--")
    ]
    assert set(sources) >= {"pyproject.toml", "README.md", LOCK, "crm_pipeline"}
    for source in sources:
        files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.*")
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not _ignored(relative), f"{relative} is left out of the build context"
    for private in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        ".crm/pg/PG_VERSION",
        "cache/analytics/summary.json",
        "crm_pipeline_tests/conftest.py",
        "emulator/graph_emulator/__init__.py",
        "crm_pipeline/__pycache__/cli.cpython-311.pyc",
        "crm_pipeline.egg-info/PKG-INFO",
    ):
        assert _ignored(private), f"{private} would be sent to the builder"
