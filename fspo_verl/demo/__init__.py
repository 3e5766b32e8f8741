"""The CPU demo's assets, built locally and cached on disk: a tiny Qwen2-style model with its tokenizer,
and the synthetic ``next_digit`` task as verl parquet, scored by :mod:`fspo_verl.demo.reward`.

``ensure_assets(cache_dir)`` builds what is missing and returns ``{"model_path", "train_files", "val_files"}``.
The config presets (``model=tiny_cpu``, ``data=synthetic_cpu``) reach it through the OmegaConf resolver
``${fspo_demo_asset:<key>}`` (registered in every verl process by :func:`register_resolver`), so the
assets are built on first use, wherever the config is resolved (the driver's checks, the TaskRunner).
"""

from __future__ import annotations

import os
from pathlib import Path

#: bump when the model or the task changes, so that caches rebuild
ASSETS_VERSION = "v2"
REWARD_FUNCTION_PATH = "pkg://fspo_verl.demo.reward"
RESOLVER = "fspo_demo_asset"


def default_cache_dir() -> Path:
    return Path(os.environ.get("FSPO_VERL_CACHE", Path.home() / ".cache" / "fspo_verl"))


def ensure_assets(cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Build (once) and return the paths of the demo model and task under ``cache_dir``."""
    from fspo_verl.demo.model import write_model
    from fspo_verl.demo.task import write_task

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = root / f"cpu_demo_{ASSETS_VERSION}"
    model_dir = base / "tiny_qwen2"
    if not (model_dir / "config.json").exists():
        base.mkdir(parents=True, exist_ok=True)
        write_model(model_dir)
    data_dir = base / "next_digit"
    if (data_dir / "train.parquet").exists() and (data_dir / "val.parquet").exists():
        data = {"train_files": str(data_dir / "train.parquet"), "val_files": str(data_dir / "val.parquet")}
    else:
        data = write_task(data_dir)
    return {"model_path": str(model_dir), **data}


def _resolve_asset(key: str) -> str:
    assets = ensure_assets()
    if key not in assets:
        raise KeyError(f"${{{RESOLVER}:{key}}}: unknown demo asset; known: {sorted(assets)}")
    return assets[key]


def register_resolver() -> None:
    """Register ``${fspo_demo_asset:model_path|train_files|val_files}`` with OmegaConf (idempotent, cheap)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_asset)
