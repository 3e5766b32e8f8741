"""The CPU demo as command-line overrides of ``python -m verl.trainer.main_ppo``.

``fspo-verl train`` composes the same YAML group files (``configs/{cluster/cpu,model/tiny_cpu,
data/synthetic_cpu}.yaml``) through Hydra. This module flattens them into ``++key=value`` overrides so the
demo also runs on verl's own entry point (and in the end-to-end tests) with one source of truth.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

#: the CPU demo's Hydra group files and the package each one fills (None: ``# @package _global_``)
DEMO_GROUPS = (
    ("cluster/cpu", None),
    ("model/tiny_cpu", None),
    ("data/synthetic_cpu", "data"),
    ("data_extras/synthetic_cpu", None),
)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    text = str(value)
    return f"'{text}'" if any(c in text for c in ",[]{}=: ") else text


def _flatten(prefix: str, node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        for key, child in node.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), child, out)
    else:
        out.append(f"++{prefix}={_format(node)}")


def group_overrides(groups: tuple[tuple[str, str | None], ...] = DEMO_GROUPS) -> list[str]:
    """``++key=value`` overrides equivalent to the group files ``groups`` (their ``defaults`` are verl's own)."""
    import yaml

    out: list[str] = []
    root = resources.files("fspo_verl") / "configs"
    for group, package in groups:
        node = yaml.safe_load((root / f"{group}.yaml").read_text()) or {}
        node.pop("defaults", None)
        node.pop("fspo_verl", None)  # fspo_verl's own section; verl's config has no such key
        _flatten(package or "", node, out)
    return out


def demo_overrides(assets: dict[str, str], run_dir: str, steps: int, extra: list[str] | None = None) -> list[str]:
    """Every override of a CPU demo run: groups, asset paths, run length, logging and checkpoints."""
    return [
        *group_overrides(),
        f"actor_rollout_ref.model.path={assets['model_path']}",
        # verl instantiates the critic's model config in validate_config even without a critic
        f"critic.model.path={assets['model_path']}",
        f"data.train_files={assets['train_files']}",
        f"data.val_files={assets['val_files']}",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={run_dir}/checkpoints",
        "trainer.experiment_name=cpu_demo",
        *(extra or []),
    ]
