"""The scale-out examples under deploy/ are valid for the Dagster we ship, not just YAML.

- The instance files (the repo-root dagster.yaml, deploy/k8s, the Helm values' instance parts)
  are checked in test_instance.py: one convention, and Dagster loads each.
- deploy/helm/values.yaml uses launcher fields dagster-k8s knows and points at a code location
  that loads.
- deploy/celery/run_config.yaml is valid run config for one of our jobs on dagster-celery.
- the cache worker's Deployment (deploy/helm/cache-worker, deploy/k8s/cache-worker.yaml) runs a
  real CLI subcommand with the same image, Secrets, environment and cache volume as the code
  location and run pods, reads the Dagster instance they use, and its chart only reads values
  it defines, all behind the `cacheWorker.enabled` switch.
No secret appears as a literal value in any of them.
"""

import importlib
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_celery import celery_executor

from crm_pipeline.definitions import defs

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SECRET_KEY = re.compile(r"(password|token|secret)$", re.I)


def _load(relative: str) -> dict:
    return yaml.safe_load((DEPLOY / relative).read_text())


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _literal_secrets(node, path="") -> list[str]:
    """Keys that look secret and hold a literal string instead of an env/secret reference."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if (
                SECRET_KEY.search(str(key))
                and isinstance(value, str | int)
                and not isinstance(value, bool)
            ):
                found.append(where)
            found += _literal_secrets(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _literal_secrets(value, f"{path}[{i}]")
    return found


def test_helm_values_match_dagster_k8s_and_our_code_location():
    values = _load("helm/values.yaml")
    assert _load("k8s/dagster.yaml")["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    known = set(importlib.import_module("dagster_k8s").K8sRunLauncher.config_type().keys())
    unknown = {key for key in launcher["config"]["k8sRunLauncher"] if _snake(key) not in known}
    assert not unknown, f"not K8sRunLauncher fields: {unknown}"

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = importlib.import_module(args[args.index("-m") + 1])
    assert getattr(module, args[args.index("-a") + 1]) is defs
    assert values["postgresql"]["enabled"] is False  # the instance database is external


def test_celery_run_config_is_valid_for_our_job_on_dagster_celery(monkeypatch):
    # The URLs come from the environment in the file; any well-formed value will do here.
    monkeypatch.setenv("CELERY_BROKER_URL", "pyamqp://guest@localhost//")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "rpc://")
    job = dg.define_asset_job(
        "summary_on_celery", selection=["analytics_summary"], executor_def=celery_executor
    )
    with_celery = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    job_def = with_celery.resolve_job_def("summary_on_celery")
    run_config = _load("celery/run_config.yaml")
    dg.validate_run_config(job_def, run_config)
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job_def, {"execution": {"config": {"brokr": "typo"}}})


@pytest.mark.parametrize(
    "relative",
    ["../dagster.yaml", "k8s/dagster.yaml", "helm/values.yaml", "celery/run_config.yaml"],
)
def test_no_literal_secrets(relative):
    assert _literal_secrets(_load(relative)) == []


def test_every_deployed_process_runs_in_production_mode():
    """Code servers and run pods refuse demo defaults: a missing secret fails loudly."""
    helm = _load("helm/values.yaml")
    [location] = helm["dagster-user-deployments"]["deployments"]
    assert {"name": "CRM_ENV", "value": "production"} in location["env"]
    assert "CRM_ENV=production" in helm["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]
    k8s = _load("k8s/dagster.yaml")
    assert "CRM_ENV=production" in k8s["run_launcher"]["config"]["env_vars"]


# The cache worker's Deployment: its own chart beside Dagster's, and a plain manifest.
WORKER_CHART = DEPLOY / "helm" / "cache-worker"
VALUES_PATH = re.compile(r"\.Values((?:\.\w+)+)")


def _env_pairs(env: list[dict]) -> set[tuple[str, str]]:
    return {(e["name"], e["value"]) for e in env if "value" in e}


def _assert_runs_the_cache_worker(command: list[str]) -> None:
    from crm_pipeline.cli import build_parser

    assert command[0] == "crm-pipeline"
    build_parser().parse_args(command[1:])  # a subcommand our CLI really has


def test_worker_chart_only_reads_values_it_defines():
    values = yaml.safe_load((WORKER_CHART / "values.yaml").read_text())
    template = (WORKER_CHART / "templates" / "deployment.yaml").read_text()
    used = {m.group(1).lstrip(".") for m in VALUES_PATH.finditer(template)}
    assert used, "the template reads its values"
    for path in used:
        node = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f".Values.{path} is not in values.yaml"
            node = node[part]
    # The switch wraps the whole Deployment: off renders nothing.
    lines = [line for line in template.splitlines() if line.strip()]
    assert lines[0].strip() == "{{- if .Values.cacheWorker.enabled }}"
    assert lines[-1].strip() == "{{- end }}"
    assert yaml.safe_load((WORKER_CHART / "Chart.yaml").read_text())["apiVersion"] == "v2"


def test_worker_chart_runs_the_worker_like_the_code_location():
    values = yaml.safe_load((WORKER_CHART / "values.yaml").read_text())
    template = (WORKER_CHART / "templates" / "deployment.yaml").read_text()
    dagster = _load("helm/values.yaml")
    [location] = dagster["dagster-user-deployments"]["deployments"]

    command = re.search(r"command:\s*(\[.*\])", template).group(1)
    _assert_runs_the_cache_worker(yaml.safe_load(command))
    assert "kind: Deployment" in template and "replicas: {{ .Values.cacheWorker" in template
    worker = values["cacheWorker"]
    assert worker["enabled"] is True and worker["replicaCount"] == 1
    # Same image, Secret and environment as the code location (and so as the run pods).
    assert values["image"] == location["image"]
    assert values["envSecrets"] == location["envSecrets"]
    assert _env_pairs(values["env"]) == _env_pairs(location["env"])
    assert {"name": "CRM_ENV", "value": "production"} in values["env"]
    assert values["volumes"] == location["volumes"]
    assert values["volumeMounts"] == location["volumeMounts"]
    # The instance it reports materializations to is the one Dagster's chart renders.
    k8s = _load("k8s/dagster.yaml")
    assert (
        values["dagsterInstance"]["configMap"]
        == k8s["run_launcher"]["config"]["instance_config_map"]
    )
    assert _literal_secrets(values) == []


def test_plain_worker_manifest_matches_the_instance_file():
    manifest = _load("k8s/cache-worker.yaml")
    run_pods = _load("k8s/dagster.yaml")["run_launcher"]["config"]
    assert manifest["kind"] == "Deployment" and manifest["spec"]["replicas"] == 1
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    _assert_runs_the_cache_worker(container["command"])
    selector = manifest["spec"]["selector"]["matchLabels"]
    assert selector.items() <= manifest["spec"]["template"]["metadata"]["labels"].items()
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == run_pods["env_secrets"]
    env = {f"{name}={value}" for name, value in _env_pairs(container["env"])}
    assert set(run_pods["env_vars"]) <= env
    home = dict(_env_pairs(container["env"]))["DAGSTER_HOME"]
    instance = next(v for v in pod["volumes"] if "configMap" in v)
    assert instance["configMap"]["name"] == run_pods["instance_config_map"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == instance["name"])
    assert mount["mountPath"] == f"{home}/dagster.yaml"
    cache = next(v for v in run_pods["volumes"] if v["name"] == "crm-cache")
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert cache["persistent_volume_claim"]["claim_name"] in claims
    assert _literal_secrets(manifest) == []
