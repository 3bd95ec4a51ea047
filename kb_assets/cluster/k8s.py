"""Kubernetes: the names deploy/k8s/ uses, the step tags that put gene_embeddings on a GPU, and the executor.

On Kubernetes the Dagster Helm chart launches each run as a pod (K8sRunLauncher) and `k8s_job_executor` runs each
step in a pod of its own, so only the gene_embeddings step asks for a GPU; the NVIDIA device plugin hands each pod
its own GPU(s) and the Kubernetes scheduler holds pods back until one is free. Every pod mounts the warehouse
volume (ReadWriteMany) at the same path, carried from the user code deployment by the chart.
"""

from __future__ import annotations

import json
import os

from kb_assets.errors import InputError

GPU_RESOURCE = "nvidia.com/gpu"
# deploy/k8s/values.yaml and deploy/k8s/warehouse-pvc.yaml use these names (a test checks they agree).
WAREHOUSE_VOLUME = "warehouse"
WAREHOUSE_CLAIM = "kb-assets-warehouse"
WAREHOUSE_MOUNT_PATH = "/warehouse"
EXECUTOR_ENV = "KB_ASSETS_EXECUTOR"
K8S_CONFIG_TAG = "dagster-k8s/config"


def gpu_k8s_tags(gpus: int = 1, cpu: str | None = None, memory: str | None = None,
                 node_selector: dict[str, str] | None = None) -> dict[str, str]:
    """Op tags for an asset whose step needs `gpus` GPUs: its pod is limited to that many `nvidia.com/gpu`
    (Kubernetes requests as many), tolerates the usual GPU-node taint, requests `cpu`/`memory` when given (else the
    run launcher's runK8sConfig applies) and, with `node_selector`, lands on matching nodes."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    resources: dict = {"limits": {GPU_RESOURCE: str(gpus)}}
    requests = {name: value for name, value in (("cpu", cpu), ("memory", memory)) if value}
    if requests:
        resources["requests"] = requests
    pod_spec: dict = {"tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]}
    if node_selector:
        pod_spec["node_selector"] = dict(node_selector)
    config = {"container_config": {"resources": resources}, "pod_spec_config": pod_spec}
    return {K8S_CONFIG_TAG: json.dumps(config, sort_keys=True)}


def deployment_executor():
    """`k8s_job_executor` when the deployment sets KB_ASSETS_EXECUTOR=k8s (deploy/k8s/values.yaml does), else None
    (Dagster's default executor) for `Definitions(executor=...)`."""
    choice = os.environ.get(EXECUTOR_ENV, "")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if choice:
        raise InputError(None, f"{EXECUTOR_ENV}={choice!r}", "not an executor this project knows",
                         "set it to k8s (Kubernetes step pods) or leave it unset")
    return None
