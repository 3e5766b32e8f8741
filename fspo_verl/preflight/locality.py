"""Whether the files a config names can be checked on this machine.

``fspo-verl validate`` usually runs where the driver will run, so a local path that does not exist is an
error. A submission script that validates on a laptop before sending the job to a cluster
(``recipes/ray_job_submit.sh``) runs where the cluster's files are absent: it sets
``FSPO_VERL_FILES_ELSEWHERE=1``, and a path that does not exist here is then a warning; a file that exists
here is still checked in full. The driver on the cluster runs without the variable and checks everything.
"""

from __future__ import annotations

import os

from fspo_verl.preflight.registry import Findings

ENV = "FSPO_VERL_FILES_ELSEWHERE"


def files_elsewhere() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


def report_missing(found: Findings, message: str) -> None:
    """An absent path: an error, or a warning under ``FSPO_VERL_FILES_ELSEWHERE=1``."""
    if files_elsewhere():
        found.warnings.append(f"{message} (not an error: {ENV}=1 says the files live where the driver will run)")
    else:
        found.errors.append(message)
