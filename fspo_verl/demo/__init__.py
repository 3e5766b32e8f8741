"""The CPU demo's assets, built locally and cached on disk: the synthetic tasks as verl parquet, ``countdown``
(the default, :mod:`fspo_verl.demo.countdown`), ``next_digit`` (:mod:`fspo_verl.demo.task`) and ``checksum``
(:mod:`fspo_verl.demo.checksum`), scored by :mod:`fspo_verl.demo.reward`, and for each a tiny Qwen2-style model
with its tokenizer, warm-started on that task (:mod:`fspo_verl.demo.warm_start`).

``ensure_assets(cache_dir)`` returns a mapping of the keys ``"model_path"``, ``"countdown_train_files"``,
``"countdown_val_files"`` (countdown), ``"next_digit_model_path"``, ``"train_files"``, ``"val_files"``
(next_digit), ``"checksum_model_path"``, ``"checksum_train_files"``, ``"checksum_val_files"`` (checksum) to
paths, and builds a task's model or parquet the first time one of its keys is read (:class:`DemoAssets`): a
run on one task never pays for another's supervised pass. ``model=tiny_cpu`` takes the model the data preset
names in ``fspo_verl.task.model_asset`` (default ``model_path``). Building takes a file lock, so processes that
resolve the paths at once build them once. The config presets (``model=tiny_cpu``, ``data=countdown_cpu``,
``data=synthetic_cpu``, ``data=checksum_cpu``) reach it through the OmegaConf resolver
``${fspo_demo_asset:<key>}`` (registered in every verl process by :func:`register_resolver`), so the assets
are built on first use, wherever the config is resolved (the driver's checks, the TaskRunner).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: bump when the model or the task changes, so that caches rebuild
ASSETS_VERSION = "v4"
REWARD_FUNCTION_PATH = "pkg://fspo_verl.demo.reward"
RESOLVER = "fspo_demo_asset"


def default_cache_dir() -> Path:
    return Path(os.environ.get("FSPO_VERL_CACHE", Path.home() / ".cache" / "fspo_verl"))


#: demo task -> (its model's key, the prefix of its files' keys, its module's parquet writer): each task's
#: model and parquet are built on first use of one of its own keys
TASKS = {
    "countdown": ("model_path", "countdown_", "fspo_verl.demo.countdown"),
    "next_digit": ("next_digit_model_path", "", "fspo_verl.demo.task"),
    "checksum": ("checksum_model_path", "checksum_", "fspo_verl.demo.checksum"),
}
FILE_KEYS = ("train_files", "val_files")


class DemoAssets(Mapping):
    """The demo's asset paths under one cache directory, built on first access of a key: reading
    ``assets["model_path"]`` builds the countdown model (once, under a file lock) and no other task's;
    iterating the keys builds nothing. Equal to a dict of the same paths (``dict(assets)`` builds them all)."""

    def __init__(self, base: Path):
        self.base = base
        self._keys = {}  # key -> (task, "model" or the file key)
        for task_name, (model_key, prefix, _) in TASKS.items():
            self._keys[model_key] = (task_name, "model")
            self._keys.update({prefix + key: (task_name, key) for key in FILE_KEYS})

    def __getitem__(self, key: str) -> str:
        task_name, what = self._keys[key]  # KeyError for an unknown key, as a dict
        if what == "model":
            return self._model(task_name)
        return self._files(task_name)[what]

    def __contains__(self, key: object) -> bool:
        return key in self._keys  # Mapping's default would read (build) the key

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"DemoAssets({str(self.base)!r})"

    def _model(self, task_name: str) -> str:
        from fspo_verl.demo.warm_start import write_warm_model

        model_dir = self.base / f"tiny_qwen2_{task_name}"
        if not (model_dir / "config.json").exists():
            with self._lock():
                if not (model_dir / "config.json").exists():
                    write_warm_model(model_dir, task=task_name)
        return str(model_dir)

    def _files(self, task_name: str) -> dict[str, str]:
        import importlib

        data_dir = self.base / task_name
        paths = {key: str(data_dir / f"{key.split('_')[0]}.parquet") for key in FILE_KEYS}
        if not all(Path(p).exists() for p in paths.values()):
            with self._lock():
                if not all(Path(p).exists() for p in paths.values()):
                    paths = importlib.import_module(TASKS[task_name][2]).write_task(data_dir)
        return paths

    def _lock(self):
        import contextlib
        import fcntl

        @contextlib.contextmanager
        def held():
            with open(self.base / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                yield

        return held()


def ensure_assets(cache_dir: str | os.PathLike | None = None) -> DemoAssets:
    """The paths of the demo models and tasks under ``cache_dir`` (default :func:`default_cache_dir`), each
    built on first access of its key (:class:`DemoAssets`)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = root / f"cpu_demo_{ASSETS_VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    return DemoAssets(base)


def _resolve_asset(key: str) -> str:
    assets = ensure_assets()
    if key not in assets:  # builds nothing: the keys are known without building
        raise KeyError(
            f"${{{RESOLVER}:{key}}}: unknown demo asset; known: {sorted(assets)} (model=tiny_cpu reads the key from"
            f" fspo_verl.task.model_asset, default model_path)"
        )
    return assets[key]  # builds this key's model or parquet only, if missing


def register() -> None:
    """What ``fspo_verl._registration`` calls in every verl process: the asset resolver."""
    register_resolver()


def register_resolver() -> None:
    """Register ``${fspo_demo_asset:<key of ensure_assets>}`` with OmegaConf (idempotent, cheap)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_asset)
