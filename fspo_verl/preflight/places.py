"""The places a run writes to and the services its loggers talk to, checked in the driver before Ray starts.

Directories. verl writes checkpoints to ``trainer.default_local_dir`` and, when set, generations to
``trainer.rollout_data_dir`` / ``trainer.validation_data_dir``, from the TaskRunner or a worker: an unwritable
one (``/proc/...``, a read-only mount, a file where a folder should be) failed there, after the first steps.
Each is probed as it will be used: the nearest existing folder of the path gets a probe file created and
removed (nothing else is created, so ``validate`` leaves no trace).

Loggers. Each backend of ``trainer.logger`` that needs a package or credentials is one row of :data:`LOGGERS`:
``wandb`` without an API key died in the TaskRunner (``wandb.errors.UsageError: No API key configured``)
after Ray had started; a backend whose package is absent died with ``ModuleNotFoundError`` there.
Validating away from the run's machine (``FSPO_VERL_FILES_ELSEWHERE=1``) turns these findings into warnings.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, ListConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.preflight.locality import report_missing
from fspo_verl.preflight.messages import problem
from fspo_verl.preflight.registry import Findings, register_check

#: (key, what is written there, whether null means "not written")
DIRECTORIES: tuple[tuple[str, str, bool], ...] = (
    ("trainer.default_local_dir", "checkpoints", False),
    ("trainer.rollout_data_dir", "the generations of each step", True),
    ("trainer.validation_data_dir", "the validation generations", True),
)
PROBE_PREFIX = ".fspo_verl_probe_"


def nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its parents that exists (where ``mkdir -p`` would start)."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def unwritable(path: Path) -> str | None:
    """Why a run could not create and write ``path`` (a folder, created if needed), or None: a probe file is
    created and removed in the folder itself or, when it does not exist yet, in its nearest existing parent."""
    base = nearest_existing(path)
    if not base.is_dir():
        return f"{base} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=PROBE_PREFIX):
            pass
    except OSError as err:
        note = "" if base == path.absolute() else f" (the nearest existing folder of {path})"
        return f"no file can be created in {base}{note}: {err.strerror or err}"
    return None


def directory_problems(config: DictConfig) -> list[str]:
    found = []
    for key, what, nullable in DIRECTORIES:
        raw = config_value(config, key)
        if raw is None and nullable or (isinstance(raw, str) and "://" in raw):
            continue
        if not isinstance(raw, str) or not raw:
            found.append(problem(key, raw, f"not a folder path ({what} go there)", f"set {key} to a writable folder"))
            continue
        why = unwritable(Path(os.path.expanduser(raw)))
        if why:
            found.append(problem(key, raw, f"the run cannot write {what} there: {why}", f"set {key} to a folder you can write (e.g. under $HOME or the run's directory)"))
    return found


# --- loggers


def _env_set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _wandb_credentials() -> bool:
    """An API key in the environment, an offline/disabled mode, or a ``wandb login`` entry in ~/.netrc."""
    if _env_set("WANDB_API_KEY") or os.environ.get("WANDB_MODE", "").strip().lower() in ("offline", "disabled", "dryrun"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _swanlab_credentials() -> bool:
    return _env_set("SWANLAB_API_KEY") or os.environ.get("SWANLAB_MODE", "cloud").strip().lower() in ("local", "offline", "disabled")


@dataclass(frozen=True)
class LoggerNeeds:
    backend: str
    #: the module verl's Tracking imports for it
    package: str
    #: the pip requirement that provides it
    requirement: str
    #: None: no credentials needed; else True when they are there
    credentials: Callable[[], bool] | None = None
    #: the fix for absent credentials
    credentials_fix: str = ""


LOGGERS: tuple[LoggerNeeds, ...] = (
    LoggerNeeds("wandb", "wandb", "wandb", _wandb_credentials,
                "export WANDB_MODE=offline (logs stay local; `wandb sync` later), or WANDB_API_KEY=<key> / `wandb login`"),
    LoggerNeeds("vemlp_wandb", "volcengine_ml_platform", "volcengine-ml-platform"),
    LoggerNeeds("swanlab", "swanlab", "swanlab", _swanlab_credentials,
                "export SWANLAB_MODE=local, or SWANLAB_API_KEY=<key>"),
    LoggerNeeds("mlflow", "mlflow", "mlflow"),
    LoggerNeeds("tensorboard", "tensorboard", "tensorboard"),
    LoggerNeeds("clearml", "clearml", "clearml"),
    LoggerNeeds("trackio", "trackio", "trackio"),
)


def logger_problems(config: DictConfig) -> list[str]:
    value = config_value(config, "trainer.logger")
    backends = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    found = []
    for needs in LOGGERS:
        if needs.backend not in backends:
            continue
        rest = [b for b in backends if b != needs.backend]
        remove = f"or drop it: trainer.logger=[{','.join(str(b) for b in rest)}]"
        if importlib.util.find_spec(needs.package) is None:
            found.append(problem("trainer.logger", value, f"the {needs.backend} logger needs the {needs.package} package, which this Python lacks", f"pip install {needs.requirement}, {remove}"))
        elif needs.credentials is not None and not needs.credentials():
            found.append(problem("trainer.logger", value, f"the {needs.backend} logger has no credentials here, so verl's TaskRunner would stop at its first log", f"{needs.credentials_fix}, {remove}"))
    return found


@register_check
def check_places(config: DictConfig) -> Findings:
    """Under ``FSPO_VERL_FILES_ELSEWHERE=1`` (validating away from where the run will run) the places and the
    environment are the other machine's: each finding is a warning."""
    found = Findings()
    for message in directory_problems(config) + logger_problems(config):
        report_missing(found, message)
    return found
