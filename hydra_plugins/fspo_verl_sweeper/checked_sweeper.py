"""fspo_verl's Hydra sweeper (``hydra/sweeper=fspo_verl``, the default of ``fspo-verl train``).

Hydra's basic sweeper expands ``a=1,2 b=x,y`` into the cartesian product and hands batches to the launcher;
it checks only that each job composes, batch by batch, and stops at the first batch with a failed job. This
one, for every launcher (basic, submitit_local, submitit_slurm, ...):

1. composes every job of the sweep and runs the driver checks (``fspo_verl.cli.app.job_findings``) on each,
   before launching any: one bad combination stops the sweep while nothing has started, with every problem
   of every job printed;
2. launches the jobs and collects every outcome: a failed job is recorded, the others run and keep their
   results; ``<sweep dir>/jobs.json`` lists each job's overrides, status and directory;
3. leaves the exit status to ``fspo-verl train`` (1 if any job did not succeed).

Hydra imports every module under ``hydra_plugins`` in every Hydra application, so this module imports
nothing heavy at import time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf, open_dict


class CheckedSweeper(BasicSweeper):
    def jobs(self, arguments: list[str]) -> list[list[list[str]]]:
        """The sweep's jobs (each a list of overrides), in batches of at most max_batch_size."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        return self.split_arguments(overrides, self.max_batch_size)

    def check_all(self, jobs: list[list[str]]) -> int:
        """Compose and check every job; print every problem; returns how many jobs fail."""
        from fspo_verl.cli.app import job_findings, print_findings

        failing = 0
        for num, overrides in enumerate(jobs):
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                del config["hydra"]
            found = job_findings(config)
            print_findings(found, prefix=f"job {num} {' '.join(overrides)}: ")
            failing += bool(found.errors)
        if failing:
            print(f"fspo-verl train: sweep not started: {failing} of {len(jobs)} job(s) fail the driver checks "
                  "(above); nothing was launched", file=sys.stderr)
        else:
            print(f"fspo-verl train: the {len(jobs)} job(s) of the sweep pass the driver checks", file=sys.stderr)
        return failing

    def sweep(self, arguments: list[str]) -> Any:
        from fspo_verl.cli.app import OUTCOMES

        batches = self.jobs(arguments)
        if self.check_all([job for batch in batches for job in batch]):
            OUTCOMES.append({"status": "not_started", "error": "a job of the sweep fails the driver checks"})
            return []
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        records: list[dict] = []
        returns = []
        first = 0
        for batch in batches:
            results = self.launcher.launch(batch, initial_job_idx=first)
            for num, (overrides, result) in enumerate(zip(batch, results), start=first):
                records.append(_record(num, overrides, result))
            first += len(batch)
            returns.append(results)
        (sweep_dir / "jobs.json").write_text(json.dumps(records, indent=2) + "\n")
        OUTCOMES.extend(records)
        _summarise(sweep_dir, records)
        return returns


def _record(num: int, overrides: list[str], result: Any) -> dict:
    record = {"job": num, "overrides": list(overrides)}
    if result.status == JobStatus.COMPLETED and isinstance(result._return_value, dict):
        return {**record, **result._return_value}
    error = result._return_value
    return {**record, "status": "failed", "error": f"{type(error).__name__}: {error}",
            "directory": str(result.working_dir or "")}


def _summarise(sweep_dir: Path, records: list[dict]) -> None:
    from fspo_verl.cli.app import first_line

    print(f"\nfspo-verl train: sweep of {len(records)} job(s) in {sweep_dir}")
    for record in records:
        status = record.get("status", "?")
        extra = f"  ({first_line(str(record['error']), 120)})" if record.get("error") else ""
        print(f"  job {record['job']}: {status:<11} {' '.join(record['overrides'])}{extra}")
    print(f"compare them: fspo-verl plot {sweep_dir}")
