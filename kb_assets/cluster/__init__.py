"""From one GPU to a cluster, with existing engines only.

- `gpu_slots.GpuSlots`: one node, N GPUs; each run leases a device with an OS file lock (freed when it dies).
- `slurm_pipes.SlurmPipesClient`: a step as a SLURM job through Dagster Pipes on the shared file system
  (`slurm.SlurmSettings` for the sbatch options; `job_entry` is the job side; `staging.StagedOutputs` publishes
  the job's outputs only on success).
- `k8s`: tags that give a step's pod a GPU, the warehouse volume names of deploy/k8s/, the executor switch.

This package imports no Dagster here, so the job side (`job_entry`) stays light.
"""
