"""How training processes find each other: SLURM tasks, and DDP children of a Hydra job.

**Hydra + DDP.** When Lightning starts the other ranks of a DDP job itself (one node, no SLURM), it
re-runs ``sys.argv`` with ``hydra.run.dir=<the run dir pattern>``. Under ``--multirun`` that argv
still holds ``--multirun`` and the whole sweep, so every child would start the sweep again in new
directories (lightning-hydra-template's reported crash and duplicate output directories), and an
unresolved ``${now:...}`` pattern can even name a new directory in a plain run.
:func:`hydra_job_subprocess_cmd` builds the child's command from *this job* instead: its resolved
overrides (one sweep point) and its actual output directory. :func:`install_hydra_ddp_fix` puts it in
place of Lightning's function.

**SLURM.** Under ``srun`` Lightning reads ranks from SLURM's variables. Its SLURM plugin would also
save checkpoints inside the requeue signal handler (see
:mod:`mmresearch.callbacks.preemption`, which does that at a step boundary instead), so
:func:`cluster_plugins` turns that part off.
"""

from __future__ import annotations

import sys
from typing import List, Sequence, Tuple

from lightning.pytorch.plugins.environments import SLURMEnvironment


def hydra_job_subprocess_cmd(local_rank: int) -> Tuple[Sequence[str], str]:
    """The command and working directory that start DDP rank ``local_rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    if __main__.__spec__ is None:
        command: List[str] = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    hydra_cfg = HydraConfig.get()
    command.append(f"--config-name={hydra_cfg.job.config_name}")
    for source in hydra_cfg.runtime.config_sources:  # a `--config-dir` given on the command line
        if source.provider == "command-line" and str(source.path).startswith("file://"):
            command.append(f"--config-dir={str(source.path)[len('file://'):]}")
    command += [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.run.dir=")]
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def install_hydra_ddp_fix() -> None:
    """Make Lightning start DDP children of a Hydra job with :func:`hydra_job_subprocess_cmd`."""
    from lightning.fabric.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = hydra_job_subprocess_cmd


def cluster_plugins() -> list:
    """Trainer plugins for the cluster this process runs on: SLURM's environment (ranks from
    ``srun``) without Lightning's in-handler auto-requeue, or nothing outside SLURM."""
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []
