"""The CPU demo's assets, built locally and cached on disk: the synthetic tasks as verl parquet, ``countdown``
(the default, :mod:`fspo_verl.demo.countdown`) and ``next_digit`` (:mod:`fspo_verl.demo.task`), scored by
:mod:`fspo_verl.demo.reward`, and for each a tiny Qwen2-style model with its tokenizer, warm-started on that task
(:mod:`fspo_verl.demo.warm_start`).

``ensure_assets(cache_dir)`` builds what is missing and returns ``{"model_path", "countdown_train_files",
"countdown_val_files", "next_digit_model_path", "train_files", "val_files"}`` (``model_path``: the countdown
model; the last two: next_digit's files). ``model=tiny_cpu`` takes the model the data preset names in
``fspo_verl.task.model_asset`` (default ``model_path``). Building takes a file lock,
so processes that resolve the paths at once build them once. The config presets (``model=tiny_cpu``,
``data=countdown_cpu``, ``data=synthetic_cpu``) reach it through the OmegaConf resolver
``${fspo_demo_asset:<key>}`` (registered in every verl process by :func:`register_resolver`), so the
assets are built on first use, wherever the config is resolved (the driver's checks, the TaskRunner).
"""

from __future__ import annotations

import os
from pathlib import Path

#: bump when the model or the task changes, so that caches rebuild
ASSETS_VERSION = "v4"
REWARD_FUNCTION_PATH = "pkg://fspo_verl.demo.reward"
RESOLVER = "fspo_demo_asset"


def default_cache_dir() -> Path:
    return Path(os.environ.get("FSPO_VERL_CACHE", Path.home() / ".cache" / "fspo_verl"))


def ensure_assets(cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Build (once) and return the paths of the demo model and tasks under ``cache_dir``."""
    import fcntl

    from fspo_verl.demo import countdown, task
    from fspo_verl.demo.warm_start import write_warm_model

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = root / f"cpu_demo_{ASSETS_VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        assets = {}
        for key, task_name in (("model_path", "countdown"), ("next_digit_model_path", "next_digit")):
            model_dir = base / f"tiny_qwen2_{task_name}"
            if not (model_dir / "config.json").exists():
                write_warm_model(model_dir, task=task_name)
            assets[key] = str(model_dir)
        for prefix, name, writer in (("countdown_", "countdown", countdown.write_task), ("", "next_digit", task.write_task)):
            data_dir = base / name
            paths = {"train_files": str(data_dir / "train.parquet"), "val_files": str(data_dir / "val.parquet")}
            if not all(Path(p).exists() for p in paths.values()):
                paths = writer(data_dir)
            assets.update({prefix + key: path for key, path in paths.items()})
    return assets


def _resolve_asset(key: str) -> str:
    assets = ensure_assets()
    if key not in assets:
        raise KeyError(
            f"${{{RESOLVER}:{key}}}: unknown demo asset; known: {sorted(assets)} (model=tiny_cpu reads the key from"
            f" fspo_verl.task.model_asset, default model_path)"
        )
    return assets[key]


def register_resolver() -> None:
    """Register ``${fspo_demo_asset:<key of ensure_assets>}`` with OmegaConf (idempotent, cheap)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_asset)
