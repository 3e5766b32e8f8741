"""The CPU demo as command-line overrides of ``python -m verl.trainer.main_ppo``.

``fspo-verl train`` composes the same YAML group files (``configs/{cluster/cpu,model/tiny_cpu,
data/<task>,data_extras/<task>}.yaml``) through Hydra. This module flattens them into ``++key=value`` overrides so the
demo also runs on verl's own entry point (and in the end-to-end tests) with one source of truth.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

#: data preset -> the ``ensure_assets`` keys of its train and val files (its model's key is in its data_extras
#: file: :func:`task_model_asset`)
DATA_ASSETS = {
    "synthetic_cpu": ("train_files", "val_files"),
    "countdown_cpu": ("countdown_train_files", "countdown_val_files"),
    "checksum_cpu": ("checksum_train_files", "checksum_val_files"),
}


def demo_groups(data: str = "synthetic_cpu") -> tuple[tuple[str, str | None], ...]:
    """The CPU demo's Hydra group files for data preset ``data`` and the package each one fills (None:
    ``# @package _global_``)."""
    return (("cluster/cpu", None), ("model/tiny_cpu", None), (f"data/{data}", "data"), (f"data_extras/{data}", None))


#: the groups of the pipeline's end-to-end tests: next_digit, whose 4-token answers make the cheapest steps
DEMO_GROUPS = demo_groups()


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


def _group_file(group: str) -> dict:
    import yaml

    return yaml.safe_load((resources.files("fspo_verl") / "configs" / f"{group}.yaml").read_text()) or {}


def group_overrides(groups: tuple[tuple[str, str | None], ...] = DEMO_GROUPS) -> list[str]:
    """``++key=value`` overrides equivalent to the group files ``groups`` (their ``defaults`` are verl's own)."""
    out: list[str] = []
    for group, package in groups:
        node = _group_file(group)
        node.pop("defaults", None)
        node.pop("fspo_verl", None)  # fspo_verl's own section; verl's config has no such key
        _flatten(package or "", node, out)
    return out


def task_policy_loss(data: str) -> dict[str, Any]:
    """The policy-loss settings data preset ``data`` sets (the ``FSPOPolicyLossConfig`` keys of
    ``fspo_verl.task`` in its data_extras file, which the algorithm presets read: ``length_bins``, and the band
    for fspo/sspo); ``{}`` if none. ``fspo_verl.task.group_size`` (the presets' rollout.n) is not one."""
    import dataclasses

    from fspo_verl.losses.config import FSPOPolicyLossConfig

    fields = {f.name for f in dataclasses.fields(FSPOPolicyLossConfig)}
    return {key: value for key, value in _task_section(data).items() if key in fields}


def task_model_asset(data: str) -> str:
    """The ``ensure_assets`` key of the model that model=tiny_cpu loads on data preset ``data``: its data_extras
    file's ``fspo_verl.task.model_asset``, default ``model_path`` (as ``model/tiny_cpu.yaml`` reads it)."""
    return _task_section(data).get("model_asset", "model_path")


def _task_section(data: str) -> dict[str, Any]:
    """``fspo_verl.task`` of data_extras/<data>.yaml; ``{}`` if none."""
    return (_group_file(f"data_extras/{data}").get("fspo_verl") or {}).get("task") or {}


def demo_overrides(
    assets: dict[str, str], run_dir: str, steps: int, extra: list[str] | None = None, data: str = "synthetic_cpu"
) -> list[str]:
    """Every override of a CPU demo run on data preset ``data``: groups, asset paths, run length, logging and
    checkpoints."""
    train_key, val_key = DATA_ASSETS[data]
    model_key = task_model_asset(data)
    return [
        *group_overrides(demo_groups(data)),
        f"actor_rollout_ref.model.path={assets[model_key]}",
        # verl instantiates the critic's model config in validate_config even without a critic
        f"critic.model.path={assets[model_key]}",
        f"data.train_files={assets[train_key]}",
        f"data.val_files={assets[val_key]}",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={run_dir}/checkpoints",
        "trainer.experiment_name=cpu_demo",
        *(extra or []),
    ]
