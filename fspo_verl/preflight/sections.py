"""Build verl's config dataclass of every section in the driver, the way verl's workers build it.

verl's workers turn each config section into a dataclass (``omega_conf_to_dataclass``: Hydra
``instantiate`` of the section's ``_target_``) when they start, so a bad field surfaced as a
``RayTaskError`` tens of seconds into a run. Here the same call runs in the driver on a copy of each
section, after two lookups Hydra's ``instantiate`` does not do:

1. every ``_target_`` must import (a typo in a dataclass path is named with its key);
2. every scalar field is assigned to an OmegaConf structured config of its dataclass, which rejects
   a value of the wrong type (``ppo_epochs=abc``) and names the field.

The section table (:data:`SECTIONS`) records which sections the workers build and when, and the
renames the ref worker applies before it builds its ``FSDPActorConfig`` (verl 0.9.1
``workers/engine_workers.py``, ``init_model``). Model sections (``HFModelConfig``) load files, so they are
built by :mod:`fspo_verl.preflight.model_files` instead, and sections that contain one are built only when
that model is local.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from fspo_verl.checks import Findings, register_check
from fspo_verl.config_lookup import config_value
from fspo_verl.preflight.messages import problem

TARGET = "_target_"
MODEL_CONFIG_CLASS = "HFModelConfig"


def _always(config: DictConfig) -> bool:
    return True


def _ref_used(config: DictConfig) -> bool:
    from verl.trainer.ppo.utils import need_reference_policy

    return bool(need_reference_policy(config))


def _critic_used(config: DictConfig) -> bool:
    from verl.trainer.ppo.utils import need_critic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(need_critic(config))


def _distillation_used(config: DictConfig) -> bool:
    return bool(config_value(config, "distillation.enabled", False))


@dataclass(frozen=True)
class Section:
    """A config section a worker builds into a dataclass."""

    key: str
    when: Callable[[DictConfig], bool] = _always
    #: (field set from another key of the config, that key), applied before building
    copies: tuple[tuple[str, str], ...] = ()
    #: (key in the section, field it becomes), applied before building
    renames: tuple[tuple[str, str], ...] = ()


SECTIONS: tuple[Section, ...] = (
    Section("actor_rollout_ref.actor"),
    Section(
        "actor_rollout_ref.ref",
        when=_ref_used,
        copies=(("ppo_mini_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size"),),
        renames=(
            ("log_prob_micro_batch_size", "ppo_micro_batch_size"),
            ("log_prob_micro_batch_size_per_gpu", "ppo_micro_batch_size_per_gpu"),
            ("log_prob_use_dynamic_bsz", "use_dynamic_bsz"),
            ("log_prob_max_token_len_per_gpu", "ppo_max_token_len_per_gpu"),
        ),
    ),
    Section("actor_rollout_ref.rollout"),
    Section("critic", when=_critic_used),
    Section("algorithm"),
    Section("distillation", when=_distillation_used),
    Section("trainer.v1.separate_async.hybrid_rollout"),
    Section("skip"),
)


def _target_nodes(node: Any, path: str):
    """(dotted key, node) of every DictConfig with a ``_target_`` at or below ``node``."""
    if not isinstance(node, DictConfig):
        return
    if TARGET in node:
        yield path, node
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _target_nodes(node[key], f"{path}.{key}")


def _locate(target: str) -> tuple[Any, str | None]:
    from hydra.utils import get_class

    try:
        return get_class(target), None
    except Exception as err:  # noqa: BLE001 - ImportError, AttributeError or Hydra's wrapper
        return None, str(err).splitlines()[0]


def _field_problems(key: str, node: DictConfig, cls: type) -> list[str]:
    """A wrong-typed scalar field of ``node`` (built into ``cls``), named with its full key."""
    try:
        typed = OmegaConf.structured(cls)
    except Exception:  # noqa: BLE001 - a dataclass OmegaConf cannot type; instantiation still checks it
        return []
    names = {f.name for f in dataclasses.fields(cls)}
    found = []
    for name in node.keys():
        if name == TARGET or name not in names or isinstance(node._get_node(name), (DictConfig, ListConfig)):
            continue
        try:
            value = node[name]
        except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve
            found.append(problem(f"{key}.{name}", node._get_node(name)._value(), f"does not resolve ({err})".replace("\n", " "), "give a value or a valid ${...} reference"))
            continue
        if isinstance(value, (DictConfig, ListConfig, dict, list)):
            continue  # a reference to another section: checked where it is defined
        try:
            typed[name] = value
        except Exception as err:  # noqa: BLE001 - omegaconf ValidationError and friends
            want = next((f.type for f in dataclasses.fields(cls) if f.name == name), None)
            want = getattr(want, "__name__", str(want)).replace("typing.", "")
            found.append(problem(f"{key}.{name}", value, f"{cls.__name__}.{name} must be {want} ({str(err).splitlines()[0]})", f"give a {want} value"))
    return found


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for name, value in node.items():
        keys.append(f"{prefix}{name}")
        keys.extend(_leaf_keys(value, f"{prefix}{name}."))
    return keys


def _blame(section: str, container: dict, err: BaseException) -> tuple[str, Any]:
    """The key (and value) an instantiation error names: the longest key of the section in its text."""
    text = str(err)
    for name in sorted(_leaf_keys(container), key=len, reverse=True):
        last = name.rsplit(".", 1)[-1]
        if re.search(rf"(?<![\w.]){re.escape(last)}(?!\w)", text) and last != TARGET:
            value: Any = container
            for part in name.split("."):
                value = value[part]
            if not isinstance(value, dict):
                return f"{section}.{name}", value
    return section, "..."


def _cause(err: BaseException) -> str:
    """The innermost message of Hydra's ``InstantiationException`` chain, on one line."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line for line in str(err).splitlines() if line.strip() and not line.startswith("full_key")]
    inner = next((line for line in lines if not line.startswith("Error in call to target")), lines[0] if lines else "")
    return f"{type(err).__name__}: {inner.strip()}"


def _contains_remote_model(node: DictConfig, key: str) -> bool:
    from fspo_verl.preflight.model_files import local_model_dir

    for sub_key, sub in _target_nodes(node, key):
        if str(sub[TARGET]).endswith(MODEL_CONFIG_CLASS) and local_model_dir(config_value(sub, "path")) is None:
            return True
    return False


def build_section(config: DictConfig, section: Section) -> list[str]:
    """Every problem found building ``section`` the way its worker does; [] when it builds."""
    node = config_value(config, section.key)
    if not isinstance(node, DictConfig) or TARGET not in node:
        return []
    found = []
    for key, sub in _target_nodes(node, section.key):
        cls, error = _locate(str(sub[TARGET]))
        if cls is None:
            found.append(problem(f"{key}._target_", sub[TARGET], f"cannot be imported ({error})", "give the dotted path of a config dataclass, e.g. the one in verl's ppo_trainer.yaml"))
        elif dataclasses.is_dataclass(cls):
            found.extend(_field_problems(key, sub, cls))
    if found or _contains_remote_model(node, section.key):
        return found
    return _instantiate(config, section, node)


def _instantiate(config: DictConfig, section: Section, node: DictConfig) -> list[str]:
    from verl.utils.config import omega_conf_to_dataclass

    try:
        container = OmegaConf.to_container(node, resolve=True)
    except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve
        return [problem(section.key, "...", f"does not resolve: {_cause(err)}", "fix the ${...} reference named above")]
    for field, source in section.copies:
        container[field] = config_value(config, source)
    for old, new in section.renames:
        if old in container:
            container[new] = container.pop(old)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            omega_conf_to_dataclass(OmegaConf.create(container))
    except Exception as err:  # noqa: BLE001 - __post_init__ raises ValueError/AssertionError/TypeError/...
        renamed = {new: old for old, new in section.renames}
        key, value = _blame(section.key, container, err)
        leaf = key.rsplit(".", 1)[-1]
        if leaf in renamed:
            key = key[: -len(leaf)] + renamed[leaf]
        return [problem(key, value, f"verl cannot build {section.key} ({_cause(err)})", f"correct {key}; the workers build this section exactly so")]
    return []


@register_check
def check_sections(config: DictConfig) -> Findings:
    """Build every section the workers build (:data:`SECTIONS`)."""
    found = Findings()
    for section in SECTIONS:
        try:
            used = section.when(config)
        except Exception:  # noqa: BLE001 - the keys `when` reads are broken; other checks name them
            used = True
        if used:
            found.errors.extend(build_section(config, section))
    return found
