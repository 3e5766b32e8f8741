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
import functools
import logging
import re
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from fspo_verl.common.config_lookup import config_value
from fspo_verl.common.critic import critic_used
from fspo_verl.preflight.messages import closest, error_text, problem
from fspo_verl.preflight.registry import Findings, register_check

TARGET = "_target_"
MODEL_CONFIG_CLASS = "HFModelConfig"


def _always(config: DictConfig) -> bool:
    return True


def _ref_used(config: DictConfig) -> bool:
    from verl.trainer.ppo.utils import need_reference_policy

    return bool(need_reference_policy(config))


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
    Section("critic", when=functools.partial(critic_used, unreadable=None)),
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

    hydra_log = logging.getLogger("hydra.utils")
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)  # it logs the failure at ERROR before raising it; we report it once
    try:
        return get_class(target), None
    except Exception as err:  # noqa: BLE001 - ImportError, AttributeError or Hydra's wrapper
        return None, " ".join(error_text(err).split())
    finally:
        hydra_log.setLevel(level)


#: scalar annotations a value is checked against, and what a value of each must be
SCALARS: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def _scalar_type(annotation: Any) -> tuple[type | None, bool]:
    """(int/float/bool/str or None for anything else, whether None is allowed) of a field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = len(args) < len(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return (annotation if annotation in SCALARS else None), optional


def _accepts(want: type, value: Any) -> bool:
    if isinstance(value, bool) and want is not bool:
        return False
    return isinstance(value, SCALARS[want])


def _field_problems(key: str, node: DictConfig, cls: type) -> list[str]:
    """A scalar field of ``node`` whose value does not fit its annotation in ``cls``, named with its full key."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to the raw annotations
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    found = []
    for name in node.keys():
        if name == TARGET or name not in hints or isinstance(node._get_node(name), (DictConfig, ListConfig)):
            continue
        try:
            value = node[name]
        except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve
            found.append(problem(f"{key}.{name}", node._get_node(name)._value(), f"does not resolve ({err})", "give a value or a valid ${...} reference"))
            continue
        want, optional = _scalar_type(hints[name])
        if want is None or (value is None and optional) or _accepts(want, value):
            continue
        found.append(problem(f"{key}.{name}", value, f"{cls.__name__}.{name} must be {'null or ' if optional else ''}of type {want.__name__}", f"give a value of type {want.__name__}"))
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
        if last != TARGET and re.search(rf"(?<!\w){re.escape(last)}(?!\w)", text):
            value: Any = container
            for part in name.split("."):
                value = value[part]
            if not isinstance(value, dict):
                return f"{section}.{name}", value
    return section, "..."


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
        return [problem(section.key, "...", f"does not resolve: {error_text(err)}", "fix the ${...} reference named above")]
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
        fix = f"correct {key}; the workers build this section exactly so"
        if "unexpected keyword argument" in str(err.__cause__ or err):
            cls, _ = _locate(str(node[TARGET]))
            fields = [f.name for f in dataclasses.fields(cls)] if cls is not None and dataclasses.is_dataclass(cls) else []
            fix = f"{key.rsplit('.', 1)[-1]} is not a setting of {section.key}; remove +{key}{closest(key.rsplit('.', 1)[-1], fields)}"
        return [problem(key, value, f"verl cannot build {section.key} ({error_text(err)})", fix)]
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
