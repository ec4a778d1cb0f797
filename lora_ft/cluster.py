"""What a run needs to know about the cluster it runs on: the scheduler's job (for the run lock) and, with several
processes, one agreed answer to "was a stop signal received?".

**The job.** A requeued job keeps its id and runs again, often on another node, where the lock its first attempt left
cannot be checked (run_lock.py). `scheduler_job` reads the id the scheduler exports, so that the lock can tell its own
job's earlier attempt (taken over) from another job (refused). SLURM also counts the attempts (SLURM_RESTART_COUNT),
which tells a requeued attempt from a second step of the same attempt writing the same directory (refused).

**The stop.** Each process of a multi-process run gets the scheduler's signal (or torchrun's forwarded copy) at its own
moment, between different steps. Stopping wherever each process happens to be would leave the others waiting in the
next step's collective. `StopAgreement.agreed` all-reduces the signal numbers (MAX) after every optimizer step, so that
all processes stop after the same step. The all-reduce goes through a CPU (gloo) group: on GPUs it adds no device sync,
only a few microseconds of host-to-host messaging (one int per process).
"""

from __future__ import annotations

import os

# (environment variable holding the job id, the scheduler's name, the variable of the array task if any)
_SCHEDULERS = (
    ("LORA_FT_JOB_ID", "job", None),  # set it yourself where no scheduler below exports an id (Kubernetes, ...)
    ("SLURM_JOB_ID", "slurm", None),  # an array task has its own SLURM_JOB_ID
    ("PBS_JOBID", "pbs", None),
    ("LSB_JOBID", "lsf", "LSB_JOBINDEX"),
    ("JOB_ID", "sge", "SGE_TASK_ID"),
    ("FLUX_JOB_ID", "flux", None),
)


def scheduler_job(environ=os.environ) -> tuple[str | None, int | None]:
    """("slurm:1234", attempt) for the job this process runs in; (None, None) outside a scheduler. The attempt is
    SLURM_RESTART_COUNT (0 for the first run of a job, +1 per requeue); None where the scheduler does not count."""
    for variable, name, task_variable in _SCHEDULERS:
        job = environ.get(variable, "").strip()
        if not job:
            continue
        task = environ.get(task_variable, "").strip() if task_variable else ""
        if task and task not in ("0", "undefined"):
            job = f"{job}[{task}]"
        attempt = None
        if name == "slurm":
            try:
                attempt = int(environ.get("SLURM_RESTART_COUNT", "0"))
            except ValueError:
                attempt = None
        return f"{name}:{job}", attempt
    return None, None


class StopAgreement:
    """One answer for every process: the signal number one of them received (the highest), or None.

    Create it in every process after the process group exists (it may create a gloo group: a collective)."""

    def __init__(self, accelerator):
        self.num_processes = accelerator.num_processes
        self.group = None
        if self.num_processes > 1:
            import torch.distributed as dist

            if dist.get_backend() != "gloo":  # NCCL: agree over the CPU, without syncing the GPU stream
                self.group = dist.new_group(backend="gloo")

    def agreed(self, signum: int | None) -> int | None:
        if self.num_processes == 1:
            return signum
        import torch
        import torch.distributed as dist

        flag = torch.tensor([signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag.item()) or None
