"""The Kubernetes Job that dagster-k8s would create for a gene_embeddings step, built by dagster-k8s's own code from
deploy/k8s/values.yaml (as the Dagster chart turns those values into instance and code location config) and the
step's op tags: one nvidia.com/gpu, the warehouse volume mounted where the names in kb_assets.cluster.k8s say."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.

import json
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

from kb_assets.cluster.k8s import (
    EXECUTOR_ENV,
    GPU_RESOURCE,
    WAREHOUSE_CLAIM,
    WAREHOUSE_MOUNT_PATH,
    WAREHOUSE_VOLUME,
    deployment_executor,
    gpu_k8s_tags,
)
from kb_assets.errors import InputError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VALUES = yaml.safe_load((DEPLOY / "values.yaml").read_text())
PVC = yaml.safe_load((DEPLOY / "warehouse-pvc.yaml").read_text())
RELEASE, NAMESPACE, IMAGE = "kb-assets", "kb-assets", "registry.example.org/kb-assets:0.1.0"
RUN_K8S_CONFIG_KEYS = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                       "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
                       "jobMetadata": "job_metadata"}


def _user_deployment() -> dict:
    [deployment] = VALUES["dagster-user-deployments"]["deployments"]
    return deployment


def _run_launcher(tmp_path: Path) -> K8sRunLauncher:
    """dagster.yaml's run_launcher as the chart renders it from runLauncher.config.k8sRunLauncher
    (helm/dagster/templates/helpers/instance/_run-launcher.tpl), through Dagster's own config validation."""
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    values = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    # In the cluster: loadInclusterConfig. Here: a kubeconfig that is never contacted.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "users": [{"name": "test", "user": {"token": "unused"}}],
    }))
    config = {
        "load_incluster_config": False, "kubeconfig_file": str(kubeconfig),
        "job_namespace": NAMESPACE, "image_pull_policy": values["imagePullPolicy"],
        "service_account_name": f"{RELEASE}-dagster", "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{RELEASE}-dagster-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
        "env_config_maps": [f"{RELEASE}-dagster-pipeline-env", *(m["name"] for m in values["envConfigMaps"])],
        "env_secrets": [s["name"] for s in values["envSecrets"]],
        "env_vars": values["envVars"], "volume_mounts": values["volumeMounts"], "volumes": values["volumes"],
        "run_k8s_config": {RUN_K8S_CONFIG_KEYS[k]: v for k, v in values["runK8sConfig"].items()},
    }
    processed = process_config(K8sRunLauncher.config_type(), config)
    assert processed.success, processed.errors
    return K8sRunLauncher.from_config_value(None, processed.value)


def _code_location_context() -> dict:
    """The container context the chart gives the code location with includeConfigInLaunchedRuns
    (charts/dagster-user-deployments/templates/helpers/_helpers.tpl, dagsterUserDeployments.k8sContainerContext)."""
    deployment = _user_deployment()
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    return {"k8s": {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{deployment['name']}-user-env"],
        "volume_mounts": deployment["volumeMounts"], "volumes": deployment["volumes"],
        **({"resources": deployment["resources"]} if deployment.get("resources") else {}), "namespace": NAMESPACE,
        "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
        "env": deployment["env"], "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }}


def _step_job(tmp_path: Path, asset: dg.AssetsDefinition) -> dict:
    """The Kubernetes Job of `asset`'s step, assembled as K8sStepHandler.launch_step does."""
    code_location = RepositoryPythonOrigin(
        "/usr/local/bin/python", ModuleCodePointer("kb_assets.definitions", "defs", working_directory=None),
        container_image=IMAGE, container_context=_code_location_context())
    run = DagsterRun(job_name="__ASSET_JOB", run_id="0123456789abcdef",
                     job_code_origin=JobPythonOrigin("__ASSET_JOB", code_location))
    launcher = _run_launcher(tmp_path)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(dict(asset.op.tags))))
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, launcher), args=["dagster", "api", "execute_step"],
        job_name="dagster-step-test", pod_name="dagster-step-test", component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


@dg.asset(op_tags=gpu_k8s_tags(gpus=1, memory="32Gi"), pool="gpu")
def gene_embeddings_like():
    """Tagged as the lead tags gene_embeddings."""


@dg.asset
def cpu_step():
    """Any other step: no tags."""


def _container_and_pod(job: dict) -> tuple[dict, dict]:
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return container, pod


def test_the_gpu_step_pod_requests_one_gpu_and_mounts_the_warehouse(tmp_path: Path):
    container, pod = _container_and_pod(_step_job(tmp_path, gene_embeddings_like))
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    # The tag's memory request, merged over the run launcher's default requests (cpu stays the default).
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "32Gi"}
    assert container["image"] == IMAGE
    assert {"name": WAREHOUSE_VOLUME, "mountPath": WAREHOUSE_MOUNT_PATH} in container["volumeMounts"]
    assert {"name": WAREHOUSE_VOLUME, "persistentVolumeClaim": {"claimName": WAREHOUSE_CLAIM}} in pod["volumes"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[EXECUTOR_ENV] == "k8s" and env["KB_ASSETS_RECIPE"].startswith(WAREHOUSE_MOUNT_PATH + "/")


def test_other_step_pods_get_the_warehouse_but_no_gpu(tmp_path: Path):
    container, pod = _container_and_pod(_step_job(tmp_path, cpu_step))
    assert GPU_RESOURCE not in (container["resources"].get("limits") or {})
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "2Gi"}  # runK8sConfig's defaults
    assert {"name": WAREHOUSE_VOLUME, "mountPath": WAREHOUSE_MOUNT_PATH} in container["volumeMounts"]
    assert {"name": WAREHOUSE_VOLUME, "persistentVolumeClaim": {"claimName": WAREHOUSE_CLAIM}} in pod["volumes"]


def test_the_volume_claim_is_the_one_the_values_mount():
    assert PVC["kind"] == "PersistentVolumeClaim" and PVC["metadata"]["name"] == WAREHOUSE_CLAIM
    assert PVC["spec"]["accessModes"] == ["ReadWriteMany"]
    deployment = _user_deployment()
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "kb_assets.definitions"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]] == [WAREHOUSE_CLAIM]


def test_gpu_tags_are_valid_dagster_k8s_config():
    config = json.loads(gpu_k8s_tags(gpus=2, node_selector={"gpu": "a100"})["dagster-k8s/config"])
    user_defined = get_user_defined_k8s_config({"dagster-k8s/config": json.dumps(config)})
    assert user_defined.container_config["resources"]["limits"] == {GPU_RESOURCE: "2"}
    assert user_defined.pod_spec_config["node_selector"] == {"gpu": "a100"}
    with pytest.raises(ValueError):
        gpu_k8s_tags(gpus=0)


def test_the_executor_follows_the_deployment(monkeypatch):
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert deployment_executor() is None
    monkeypatch.setenv(EXECUTOR_ENV, "k8s")
    assert deployment_executor() is k8s_job_executor
    monkeypatch.setenv(EXECUTOR_ENV, "slurm")
    with pytest.raises(InputError, match="KB_ASSETS_EXECUTOR='slurm'"):
        deployment_executor()
