"""``fspo-verl train``: a Hydra application (``@hydra.main``) over our presets and verl's ``ppo_trainer.yaml``.

Everything ``python -m verl.trainer.main_ppo`` accepts works here too, plus our preset groups
(``fspo_verl/configs``) and Hydra's own flags: ``--help``, ``--hydra-help``, ``--cfg job|hydra|all``,
``--resolve``, ``--info``, ``--shell-completion``, ``-cn/-cp``, ``-m`` (sweeps) and the launcher plugins
(``hydra/launcher=submitit_local|submitit_slurm`` with the ``submitit`` extra).

Each job (one run, or one combination of a sweep):

1. is checked in the driver (:func:`job_findings`: ``fspo_verl.preflight.registry.run_checks``, which holds the CPU
   backend's checks too) before Ray starts. In a sweep the sweeper
   (``hydra_plugins.fspo_verl_sweeper``) has already composed and checked every job before launching any;
2. gets its run files in its Hydra job directory (:mod:`fspo_verl.cli.run_dir`): resolved config, metrics
   JSONL, TensorBoard events, checkpoints (unless ``trainer.default_local_dir`` is set), plots, status;
3. runs verl's V1 trainer in a fresh Ray session (``ray.shutdown()`` afterwards, whatever happened), with
   the process environment restored afterwards, so the next job of a sweep starts clean;
4. records ``ok``, ``failed`` (with the error) or ``stopped`` (SIGTERM/SIGINT; the process then exits 143/130)
   in ``status_<n>.json``, written whole or not at all; a failed job does not stop a sweep.

A job's directory is locked while it runs (:class:`fspo_verl.cli.run_dir.RunLock`): a second run there is refused
and writes nothing there. Hydra's record of the job (``.hydra/``) is therefore written here, once the lock is
held (:func:`write_hydra_record`), not by Hydra before the job's code runs (our config's
``hydra.output_subdir: null``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fspo_verl.cli.lost_nodes import lost_nodes_note
from fspo_verl.cli.presets import (
    GROUPS,
    ROOT_CONFIG,
    description,
    presets,
    with_search_path,
)
from fspo_verl.cli.run_dir import (
    RunDirBusy,
    RunFiles,
    RunLock,
    WriteFailed,
    checkpoint_estimate,
    place_checkpoints,
    reserve_run,
    write_error_line,
    write_whole,
)
from fspo_verl.preflight.checkpoints import TRACKER, apply_resume_fallback
from fspo_verl.preflight.registry import Findings, run_checks

PROG = "fspo-verl"
HELP_RESOLVER = "fspo_verl_help"
#: what each job this process ran (single run) or launched (sweep) ended with: one dict per job
OUTCOMES: list[dict] = []
#: the signal that stopped a job of this process, if one did
OUTCOME_SIGNALS: list[int] = []


def job_findings(config: DictConfig) -> Findings:
    """Every check a job must pass in the driver before anything starts (the single entry: run_checks)."""
    return run_checks(config)


def print_findings(found: Findings, prefix: str = "") -> None:
    for message in found.warnings:
        print(f"{prefix}WARNING: {message}", file=sys.stderr)
    for message in found.errors:
        print(f"{prefix}ERROR: {message}", file=sys.stderr)


def prepare_backend(config: DictConfig) -> None:
    """``fspo_verl.<backend>.prepare_run(config)`` for a cluster preset that sets ``fspo_verl.backend``."""
    import importlib

    backend = OmegaConf.select(config, "fspo_verl.backend", default=None)
    if backend:
        importlib.import_module(f"fspo_verl.{backend}").prepare_run(config)


@contextlib.contextmanager
def _job_environment():
    """Restore os.environ and end this process's Ray session when the job ends, however it ends."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _train(config: DictConfig, files: RunFiles) -> None:
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.utils.device import auto_set_device

    os.environ.update(files.logger_environment())
    if OmegaConf.select(config, "trainer.device") == "cpu" and os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        # submitit_local hides the GPUs of a job that asks for none with CUDA_VISIBLE_DEVICES="", and Ray then
        # refuses the logical GPUs a CPU run declares (ray_kwargs.ray_init.num_gpus): "Attempting to start
        # raylet with 2 GPU, but CUDA_VISIBLE_DEVICES contains []". A CPU run uses no CUDA device at all.
        del os.environ["CUDA_VISIBLE_DEVICES"]
    prepare_backend(config)
    auto_set_device(config)
    run_ppo(config, task_runner_class=TaskRunnerV1)


def _plot(files: RunFiles) -> list[str]:
    from fspo_verl.analysis.plotting import plot_run

    if not files.metrics.is_file() or files.metrics.stat().st_size == 0:
        return []
    try:
        written = plot_run(files.metrics, files.plots)
    except ValueError as err:
        print(f"{PROG} train: no plots: {err}", file=sys.stderr)
        return []
    return [str(path) for path in written.values() if path is not None]


class JobStopped(BaseException):
    """SIGTERM or SIGINT reached the driver: the job stops, records itself and ends its Ray session."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


#: the signals that stop a job cleanly; the process then exits 128 + the signal's number (143, 130)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _stop_on_signals(on_stop=None):
    """SIGTERM/SIGINT raise :class:`JobStopped` in the main thread (where the driver waits in ``ray.get``,
    which lets Python's signal handlers run), once; later ones are ignored while the job cleans up. Yields
    the list of signals received: raised inside Ray's Cython code, JobStopped can surface wrapped in a
    ``SystemError``, so the list, not the exception's type, says whether the job was stopped.

    ``ray.init`` replaces the SIGTERM handler twice: in Python (``sys.exit(15)``) and, as its core worker
    starts, at the C level (a crash handler that dumps and aborts: the driver died by SIGABRT with no status
    file and no summary). While the job runs, ``ray.init`` is wrapped so that our handlers are installed
    again right after it; the previous handlers and ``ray.init`` come back when the job ends."""
    import ray

    stopping: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return

    def stop(signum, frame):
        if not stopping:
            stopping.append(signum)
            raise JobStopped(signum)

    def install() -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, stop)

    ray_init = ray.init

    @functools.wraps(ray_init)
    def init_then_ours(*args, **kwargs):
        try:
            return ray_init(*args, **kwargs)
        finally:
            install()

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    install()
    ray.init = init_then_ours
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        """Woken by the signal itself (the wakeup fd), not by the main thread: when the whole process group
        gets SIGTERM, Ray's own processes die with the driver's, and Ray's core worker can end the driver
        before its main thread runs Python again; ``on_stop`` records the stop first."""
        while data := os.read(read_end, 64):
            for signum in data:
                if signum in STOP_SIGNALS and on_stop is not None:
                    on_stop(signal.Signals(signum))
                    return

    watcher = threading.Thread(target=watch, name="fspo-verl-stop-watcher", daemon=True)
    watcher.start()
    try:
        yield stopping
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)
        watcher.join(timeout=5)
        os.close(read_end)
        ray.init = ray_init
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _lock_directories(job_dir: Path, checkpoints: Path) -> list[RunLock]:
    """Lock the job's directory, and the checkpoint directory when it lies elsewhere; raises RunDirBusy."""
    locks = [RunLock(job_dir)]
    resolved = checkpoints.expanduser().resolve()
    if "://" not in str(checkpoints) and job_dir.resolve() not in (resolved, *resolved.parents):
        try:
            locks.append(RunLock(resolved))
        except BaseException:
            locks[0].release()
            raise
    return locks


#: where Hydra writes its record of a job by default (``hydra.output_subdir``); fspo-verl train writes it there
HYDRA_RECORD = ".hydra"


def hydra_record_dir(job_dir: Path) -> Path | None:
    """``<job dir>/.hydra`` when this app writes Hydra's record of the job: ``hydra.output_subdir`` is null
    (our config's default) and was not set on the command line. None when Hydra wrote it already (a value the
    user set) or the user asked for none (``hydra.output_subdir=null``)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_config = HydraConfig.get()
    if hydra_config.output_subdir is not None:
        return None
    if any(str(o).lstrip("+~").split("=", 1)[0] == "hydra.output_subdir" for o in hydra_config.overrides.hydra):
        return None
    return job_dir / HYDRA_RECORD


def write_hydra_record(folder: Path, job_config: str) -> None:
    """Hydra's record of the job, as ``hydra.core.utils.run_job`` writes it: ``config.yaml`` (``job_config``:
    the job's config as Hydra composed it, unresolved), ``hydra.yaml`` (the ``hydra`` node) and
    ``overrides.yaml`` (the job's overrides, which ``fspo-verl plot`` labels a sweep's jobs by). Each file is
    written whole or not at all; raises OSError (:class:`WriteFailed` for a failed write)."""
    from hydra.core.hydra_config import HydraConfig

    folder.mkdir(exist_ok=True)
    write_whole(folder / "config.yaml", job_config)
    write_whole(folder / "hydra.yaml", OmegaConf.to_yaml(HydraConfig.instance().cfg))
    write_whole(folder / "overrides.yaml", OmegaConf.to_yaml(HydraConfig.get().overrides.task))


def _not_started(job_dir: Path, message: str) -> dict:
    print(f"ERROR: {message}\n{PROG} train: not started", file=sys.stderr)
    return {"status": "not_started", "directory": str(job_dir), "errors": [message]}


def run_job(config: DictConfig) -> dict:
    """Check, train and record one job in its Hydra job directory; returns its outcome (never raises for a
    failed training, so that a sweep goes on).

    The job's directory (and its checkpoint directory) is locked first (:class:`fspo_verl.cli.run_dir.RunLock`):
    a second run there is refused before it writes anything there, checks anything or starts Ray; the job's
    ``.hydra/`` record is written once the lock is held. SIGTERM/SIGINT stop the job cleanly: Ray session
    ended, ``status_<n>.json`` (``stopped``) and the summary written."""
    from hydra.core.hydra_config import HydraConfig

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    job_config = OmegaConf.to_yaml(config)  # as Hydra composed it, before place_checkpoints sets a key
    checkpoints = place_checkpoints(config, job_dir)
    try:
        locks = _lock_directories(job_dir, checkpoints)
    except RunDirBusy as busy:
        return _not_started(job_dir, f"hydra.run.dir={busy.directory}: {busy}")
    except OSError as err:
        return _not_started(job_dir, f"hydra.run.dir={job_dir}: {write_error_line(job_dir, err)}; "
                                     "set hydra.run.dir to a folder you can write")
    try:
        record = hydra_record_dir(job_dir)
        if record is not None:
            try:
                write_hydra_record(record, job_config)
            except OSError as err:
                line = err.strerror if isinstance(err, WriteFailed) else write_error_line(record, err)
                return _not_started(job_dir, f"hydra.run.dir={job_dir}: {line}; free space there, or set "
                                             "hydra.run.dir to a folder you can write")
        return _checked_job(config, job_dir, checkpoints)
    finally:
        for lock in locks:
            lock.release()


def _checked_job(config: DictConfig, job_dir: Path, checkpoints: Path) -> dict:
    found = job_findings(config)
    print_findings(found)
    if found.errors:
        print(f"{PROG} train: not started; fix the problems above ({PROG} validate shows them too)", file=sys.stderr)
        return {"status": "not_started", "directory": str(job_dir), "errors": found.errors}
    intact = apply_resume_fallback(config)
    if intact is not None:
        print(f"WARNING: trainer.resume_mode=auto: the step {TRACKER} names is gone; resuming from {intact} "
              f"(trainer.resume_mode=resume_path trainer.resume_from_path={intact.resolve()})", file=sys.stderr)

    files = reserve_run(job_dir)
    start_ms = int(time.time() * 1000)
    status, error = "failed", None
    reported = threading.Event()

    def record_stop(signum: signal.Signals) -> None:  # from the watcher thread, at once
        finish_job(files, "stopped", str(JobStopped(signum)), checkpoints, plots=False, reported=reported)

    lost: list[str | None] = [None]  # the nodes a failed run lost, asked while Ray is still connected
    with _stop_on_signals(record_stop) as stopping:
        try:
            write_whole(files.config, OmegaConf.to_yaml(config, resolve=True))
            with _job_environment():
                try:
                    _train(config, files)
                except Exception as err:
                    if not stopping:  # the job environment ends Ray's session on exit: ask the GCS now
                        lost[0] = lost_nodes_note(err, start_ms)
                    raise
            status = "ok"
        except BaseException as err:  # recorded, reported, and the sweep goes on
            if stopping:  # JobStopped, or what Ray's code wrapped it in
                status, error = "stopped", str(JobStopped(stopping[0]))
                OUTCOME_SIGNALS.append(stopping[0])
            elif not isinstance(err, Exception):
                raise
            else:
                print(traceback.format_exc(), file=sys.stderr)
                error = write_error_note(err) or f"{type(err).__name__}: {err}"
                if lost[0]:
                    error = f"{lost[0]}. Ray's error: {error}"
    return finish_job(files, status, error, checkpoints, reported=reported)


def finish_job(files: RunFiles, status: str, error: str | None, checkpoints: Path, plots: bool = True,
               reported: threading.Event | None = None) -> dict:
    """Plots, ``status_<n>.json`` and the summary; a write that fails is one line, and the summary still prints.

    ``reported`` (set once the summary is printed) lets a stop be recorded twice: at once from the signal
    watcher (no plots), and again when the job has ended cleanly (with plots), the summary printed once."""
    with _FINISHING:
        return _finish(files, status, error, checkpoints, plots, reported)


#: one finish at a time: the signal watcher's and the main thread's
_FINISHING = threading.Lock()


def _finish(files: RunFiles, status: str, error: str | None, checkpoints: Path, plots: bool,
            reported: threading.Event | None) -> dict:
    try:
        plots = _plot(files) if plots else []
    except OSError as err:
        print(f"ERROR: {write_error_line(files.plots, err)}", file=sys.stderr)
        plots = []
    details = {"metrics": str(files.metrics), "plots": plots, "tensorboard": str(files.tensorboard),
               "checkpoints": str(checkpoints), "config": str(files.config)}
    outcome = {"status": status, "run": files.index, "directory": str(files.directory.resolve()), **details,
               **({"error": error} if error else {})}
    try:
        outcome = files.write_status(status, **details, **({"error": error} if error else {}))
    except WriteFailed as err:
        print(f"ERROR: {err.strerror}", file=sys.stderr)
        outcome["status_file"] = f"not written: {err.strerror}"
    if reported is None or not reported.is_set():
        _report(outcome)
        sys.stdout.flush()
        if reported is not None:
            reported.set()
    return outcome


#: a write error's text inside an exception (Ray re-raises a worker's OSError as text): errno and path
_WRITE_ERROR = re.compile(r"\[Errno (28|27|122|30|5)\] ([^:\n]+): '([^'\n]+)'")


def write_error_note(err: BaseException) -> str | None:
    """One line for a full disk / write error anywhere in ``err`` (a worker's, relayed by Ray as text): the
    path, the bytes needed and the space free where it was written; None for any other error.

    The relayed error names the file but not the size of what was being written; for a checkpoint shard the
    line gives the size of the previous checkpoint as the estimate, and says so
    (:func:`fspo_verl.cli.run_dir.checkpoint_estimate`)."""
    match = _WRITE_ERROR.search(f"{err}\n{err.__cause__ or ''}")
    if match is None:
        return None
    errno_, why, path = int(match[1]), match[2], match[3]
    needed, estimate = checkpoint_estimate(path)
    return write_error_line(path, OSError(errno_, why), needed, estimate)


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def files_status(outcome: dict) -> str:
    return str(Path(outcome["directory"]) / f"status_{outcome['run']}.json")


def _report(outcome: dict) -> None:
    print(f"\n{PROG} train: run {outcome['run']} {outcome['status']} in {outcome['directory']}")
    if outcome.get("error"):
        where = outcome.get("status_file") or f"the whole error: {files_status(outcome)}"
        print(f"  error        {first_line(outcome['error'])} ({where})")
    print(f"  metrics      {outcome['metrics']}")
    print(f"  plots        {', '.join(outcome['plots']) or 'none (no step was logged)'}")
    print(f"  tensorboard  {outcome['tensorboard']}")
    print(f"  checkpoints  {outcome['checkpoints']}")
    print(f"  config       {outcome['config']}")


@hydra.main(config_path="pkg://fspo_verl.configs", config_name=ROOT_CONFIG, version_base=None)
def hydra_main(config: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    outcome = run_job(config)
    if HydraConfig.get().mode == RunMode.RUN:  # a sweep's outcomes are collected by the sweeper
        OUTCOMES.append(outcome)
    return outcome


def help_text() -> str:
    """``fspo-verl train --help`` (a string.Template for Hydra: $FLAGS_HELP is Hydra's list of flags)."""
    lines = [
        f"{PROG} train: verl's V1 trainer with fspo_verl's presets, as a Hydra application.",
        "",
        f"  {PROG} train [group=option ...] [key=value ...]          one run",
        f"  {PROG} train -m algorithm=fspo,gspo data.seed=0,1        a sweep: one job per combination",
        "",
        "== Preset groups (group=option) ==",
    ]
    for group in GROUPS:
        lines.append(f"{group}:")
        lines += [f"  {name:<28} {description(group, name)}" for name in presets(group)]
    lines += [
        "verl's own groups (actor_rollout_ref.*, critic, ...) and every verl key override as usual; "
        f"`{PROG} train --cfg job` prints the composed config.",
        "",
        "== Common keys ==",
        "  trainer.total_training_steps=N    data.seed=S (data order)    actor_rollout_ref.rollout.seed=S (sampling)",
        "  trainer.default_local_dir=DIR     checkpoints (default: checkpoints/ in the job's directory)",
        "",
        "== Outputs ==",
        "  one run:  outputs/<trainer.project_name>/<trainer.experiment_name>/  (launch again to resume)",
        "  a sweep:  multirun/<date>/<time>/<job number>/,  compared by `fspo-verl plot <sweep dir>`",
        "  each run: metrics_<n>.jsonl, config_<n>.yaml, plots_<n>/, status_<n>.json, tensorboard/, checkpoints/",
        "  change with hydra.run.dir=... / hydra.sweep.dir=...",
        "",
        "== Launchers (with -m) ==",
        "  hydra/launcher=basic (default, one job after the other)   submitit_local   submitit_slurm",
        "  (submitit: pip install 'fspo-verl[submitit]'; e.g. hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=8)",
        "",
        "== Flags ==",
        "$FLAGS_HELP",
    ]
    return "\n".join(line.replace("$", "$$") if line != "$FLAGS_HELP" else line for line in lines)


def register_help_resolver() -> None:
    if not OmegaConf.has_resolver(HELP_RESOLVER):
        OmegaConf.register_new_resolver(HELP_RESOLVER, help_text)


def _completion_line(argv: list[str]) -> int | None:
    """Shell completion reaches us as ``fspo-verl -sc query=bash`` with COMP_LINE='fspo-verl train ...'.

    Hydra completes the words after the program name, so ``train`` is dropped from COMP_LINE; before a
    command is typed the commands themselves are offered. Returns an exit status when answered here."""
    line = os.environ.get("COMP_LINE")
    if line is None or not any(arg.startswith("query=") for arg in argv):
        return None
    words = line.split()
    typed_command = len(words) > 2 or (len(words) == 2 and line.endswith(" "))
    if not typed_command:
        from fspo_verl.cli import COMMANDS

        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(name for name in COMMANDS if name.startswith(prefix)))
        return 0
    os.environ["COMP_LINE"] = line.replace(f" {words[1]}", "", 1)
    return None


def _add_search_path(argv: list[str]) -> list[str]:
    """``argv`` with hydra.searchpath (fspo_verl.cli.presets.SEARCH_PATH) among its overrides.

    argparse wants the overrides in one run of words, so the search path goes just before the first."""
    import contextlib
    import io

    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = get_args_parser().parse_args(argv)
    except SystemExit:  # a bad command line: Hydra reports it
        return list(argv)
    if args.shell_completion and not any(a.startswith("query=") for a in argv):
        return list(argv)  # install/uninstall take no overrides
    overrides = list(args.overrides)
    added = with_search_path(overrides)
    if added == overrides:
        return list(argv)
    count = len(overrides)
    start = next((i for i in range(len(argv)) if argv[i:i + count] == overrides), len(argv)) if count else len(argv)
    return [*argv[:start], added[0], *argv[start:]]


def train_main(argv: list[str]) -> int:
    """``fspo-verl train ARGS``: the Hydra application; exit 1 unless every job it ran succeeded."""
    from fspo_verl.demo import register_resolver

    register_resolver()
    register_help_resolver()
    answered = _completion_line(argv)
    if answered is not None:
        return answered
    OUTCOMES.clear()
    OUTCOME_SIGNALS.clear()
    saved_argv = sys.argv
    # Hydra parses sys.argv; the program name is what its completion script binds
    sys.argv = [PROG, *_add_search_path(argv)]
    try:
        hydra_main()
    finally:
        sys.argv = saved_argv
    if OUTCOME_SIGNALS:  # stopped by a signal: the shell's convention, 128 + its number
        return 128 + OUTCOME_SIGNALS[-1]
    return 0 if all(outcome.get("status") == "ok" for outcome in OUTCOMES) else 1
