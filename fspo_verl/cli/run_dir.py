"""A training run's files inside its directory (Hydra's job directory under ``fspo-verl train``).

One directory can hold several runs: ``outputs/<project>/<experiment>/`` is reused when the same experiment
is launched again, so that verl resumes from the checkpoints kept there. Every run therefore gets a number
``n`` and its own files; nothing a run writes can replace another run's file::

    metrics_<n>.jsonl      verl's file logger (VERL_FILE_LOGGER_PATH)
    config_<n>.yaml        the resolved config this run trained with
    plots_<n>/             fspo_verl.analysis.plotting's PNGs of metrics_<n>.jsonl
    status_<n>.json        ok / failed / not_started, with the error
    tensorboard/           TensorBoard events (TENSORBOARD_DIR; event file names are unique per writer)
    checkpoints/           verl's checkpoints, unless trainer.default_local_dir was set

verl's ``FileLogger`` opens its path with mode ``"wb"``, which truncates. The run number is reserved by
creating ``metrics_<n>.jsonl`` with ``O_CREAT | O_EXCL`` (atomic: two runs starting at once cannot get the
same number) at one past the highest number present, so a deleted older file never makes a new run reuse
the name of a later one (the bug of counting the files).

A directory is used by one run at a time: :class:`RunLock` (an OS lock that dies with its process) makes a
second run there fail in the driver, naming the first run's PID. The status file is written whole or not at
all (:func:`write_whole`: a temporary name, then a rename), so a full disk never leaves it empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

_METRICS = re.compile(r"^metrics_(\d+)\.jsonl$")
#: trainer.default_local_dir in verl 0.9.1's ppo_trainer.yaml (unresolved); any other value is the user's
VERL_DEFAULT_CHECKPOINT_DIR = "checkpoints/${trainer.project_name}/${trainer.experiment_name}"


@dataclass(frozen=True)
class RunFiles:
    directory: Path
    index: int

    @property
    def metrics(self) -> Path:
        return self.directory / f"metrics_{self.index}.jsonl"

    @property
    def config(self) -> Path:
        return self.directory / f"config_{self.index}.yaml"

    @property
    def plots(self) -> Path:
        return self.directory / f"plots_{self.index}"

    @property
    def status(self) -> Path:
        return self.directory / f"status_{self.index}.json"

    @property
    def tensorboard(self) -> Path:
        return self.directory / "tensorboard"

    def logger_environment(self) -> dict[str, str]:
        """The variables that point verl's file and TensorBoard loggers at this run's files."""
        return {"VERL_FILE_LOGGER_PATH": str(self.metrics.resolve()), "TENSORBOARD_DIR": str(self.tensorboard.resolve())}

    def write_status(self, status: str, **details) -> dict:
        """Write ``status_<n>.json`` whole or not at all (:func:`write_whole`); raises :class:`WriteFailed`."""
        record = {"status": status, "run": self.index, "directory": str(self.directory.resolve()), **details}
        write_whole(self.status, json.dumps(record, indent=2) + "\n")
        return record


class WriteFailed(OSError):
    """A file could not be written; ``str()`` is one line naming the path, the bytes needed and the free space."""


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` into a temporary name next to ``path`` and rename it over ``path`` (atomic on POSIX): a
    full disk or a write error leaves the previous file (or none), never an empty or half-written one."""
    data = text.encode()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise WriteFailed(err.errno, write_error_line(path, err, len(data))) from err


def write_error_line(path: str | Path, err: OSError, needed: int | None = None, estimate: str | None = None) -> str:
    """``cannot write PATH: No space left on device (needs N bytes; M bytes free there)`` on one line.

    ``needed`` is the size of what was being written when the writer knows it; ``estimate`` says where the
    figure comes from when it is only an estimate (``needs about N bytes, <estimate>``), or, without
    ``needed``, why the bytes needed are not known."""
    try:
        free = shutil.disk_usage(nearest_folder(Path(path))).free
    except OSError:
        free = None
    if needed is not None:
        need = f"needs about {needed:,} bytes, {estimate}" if estimate else f"needs {needed:,} bytes"
    else:
        need = f"bytes needed not known: {estimate}" if estimate else ""
    sizes = "; ".join(part for part in (need, f"{free:,} bytes free there" if free is not None else "") if part)
    return f"cannot write {path}: {err.strerror or err}" + (f" ({sizes})" if sizes else "")


_STEP = re.compile(r"^global_step_(\d+)$")


def checkpoint_estimate(path: str | Path) -> tuple[int | None, str]:
    """What a write inside ``<checkpoints>/global_step_<N>/`` needs, as far as the driver can tell: the bytes
    of the newest earlier step (``global_step_<K>``, K < N; a save writes the same shards each time), and
    where that figure comes from. ``(None, why)`` when there is no earlier step or ``path`` is not in one.
    A worker's write error names the file, not the size of what it was writing, so this is an estimate."""
    parts = Path(path).parts
    at = next((i for i in range(len(parts) - 1, -1, -1) if _STEP.match(parts[i])), None)
    if at is None:
        return None, "the write was not a checkpoint step's"
    root, step = Path(*parts[:at]), int(_STEP.match(parts[at])[1])
    try:
        steps = root.iterdir() if root.is_dir() else ()
        earlier = [int(m[1]) for p in steps if (m := _STEP.match(p.name)) and int(m[1]) < step and p.is_dir()]
        if not earlier:
            return None, f"no checkpoint before global_step_{step} to measure"
        previous = root / f"global_step_{max(earlier)}"
        size = sum(f.stat().st_size for f in previous.rglob("*") if f.is_file())
    except OSError as err:
        return None, f"{root} could not be read ({err.strerror or err})"
    return size, f"the size of the previous checkpoint {previous.name}"


def nearest_folder(path: Path) -> Path:
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return path


#: the file a run holds an exclusive lock on for as long as it uses its directory
LOCK_FILE = ".fspo_verl_run.lock"


class RunDirBusy(Exception):
    """Another live process holds the directory's lock."""

    def __init__(self, directory: Path, pid: str):
        self.directory, self.pid = directory, pid
        super().__init__(
            f"{directory} is in use by another run (PID {pid or 'unknown'}), which would have its checkpoints, "
            f"metrics and logs overwritten; wait for it to end, or give this run another directory "
            f"(hydra.run.dir=..., or another trainer.experiment_name)"
        )


class RunLock:
    """An exclusive ``flock`` on ``<directory>/.fspo_verl_run.lock`` holding the owner's PID.

    The kernel drops the lock when the holder's file descriptor closes, so a run that is killed (even by
    SIGKILL) leaves no stale lock. The descriptor is not inherited by child processes (Python's default), so
    Ray processes the run starts do not keep it locked after the run is gone."""

    def __init__(self, directory: str | Path):
        import fcntl

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(self._fd, 64, 0).decode(errors="replace").strip()
            os.close(self._fd)
            raise RunDirBusy(self.directory.resolve(), pid) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def run_numbers(directory: str | Path) -> list[int]:
    """The numbers of the runs whose metrics file is in ``directory``, ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(m[1]) for p in directory.iterdir() if (m := _METRICS.match(p.name)))


def reserve_run(directory: str | Path) -> RunFiles:
    """Create ``directory`` if needed and reserve the next run number by creating its empty metrics file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index = max(run_numbers(directory), default=-1) + 1
    while True:
        try:
            os.close(os.open(directory / f"metrics_{index}.jsonl", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:  # another run took this number between the listing and the open
            index += 1
            continue
        return RunFiles(directory, index)


def latest_metrics(directory: str | Path) -> Path | None:
    """The metrics file of the most recent run in ``directory``, or None."""
    numbers = run_numbers(directory)
    return Path(directory) / f"metrics_{numbers[-1]}.jsonl" if numbers else None


def place_checkpoints(config: DictConfig, directory: str | Path) -> Path:
    """Point trainer.default_local_dir at ``<directory>/checkpoints`` unless the user set it; returns it resolved."""
    raw = OmegaConf.to_container(config.trainer, resolve=False).get("default_local_dir")
    if raw == VERL_DEFAULT_CHECKPOINT_DIR:
        with open_dict(config):
            config.trainer.default_local_dir = str((Path(directory) / "checkpoints").resolve())
    return Path(str(config.trainer.default_local_dir))
