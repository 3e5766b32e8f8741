"""The config resolved as verl's TaskRunner resolves it: ``OmegaConf.resolve`` in place, on a copy.

``OmegaConf.to_yaml(config, resolve=True)`` (what ``fspo-verl validate`` prints, and the run's saved
config) is lenient: it turns a resolver's plain Python list into a list. In-place resolution, which verl's
``TaskRunner.run`` does first, refuses it (``UnsupportedValueType: Value 'list' is not a supported primitive
type``). A preset line such as ``${oc.select:fspo_verl.task.length_bins,[256,512]}`` therefore validated
and then failed in the TaskRunner, after Ray had started, for every data preset without that key.
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig, ListConfig, OmegaConf

from fspo_verl.preflight.messages import error_text, problem
from fspo_verl.preflight.registry import Findings, register_check

FIX = ("give the key a plain value, or an interpolation whose result is a config node: a list or dict default "
       "inside a resolver needs ${oc.create:...}, e.g. ${oc.select:other.key,${oc.create:[1,2]}}")


@register_check
def check_resolves_in_place(config: DictConfig) -> Findings:
    try:
        OmegaConf.resolve(copy.deepcopy(config))
        return Findings()
    except Exception as err:  # noqa: BLE001 - whatever fails here fails in the TaskRunner
        key, raw = unresolvable_key(copy.deepcopy(config)) or ("the config", "")
        why = f"does not resolve in place as verl's TaskRunner resolves it (OmegaConf.resolve): {error_text(err)}"
        return Findings(errors=[problem(key, raw, why, FIX)])


def unresolvable_key(config: DictConfig) -> tuple[str, str] | None:
    """(dotted key, raw value) of the first interpolation that in-place resolution refuses, or None.

    Walks the tree as ``OmegaConf.resolve`` does, one leaf at a time, with OmegaConf's own per-leaf step
    (``omegaconf._impl._resolve_container_value``, private: any surprise there just names no key), resolving
    ``config`` as it goes.
    """
    try:
        from omegaconf._impl import _resolve_container_value
    except ImportError:  # pragma: no cover - a future OmegaConf without it
        return None

    def walk(node, prefix: str) -> tuple[str, str] | None:
        for key in (node.keys() if isinstance(node, DictConfig) else range(len(node))):
            child = node._get_node(key)
            path = f"{prefix}.{key}" if prefix else str(key)
            if child._is_interpolation():
                try:
                    _resolve_container_value(node, key)
                except Exception:  # noqa: BLE001
                    return path, str(child._value())
            elif isinstance(child, (DictConfig, ListConfig)):
                found = walk(child, path)
                if found:
                    return found
        return None

    try:
        return walk(config, "")
    except Exception:  # noqa: BLE001 - naming the key is a courtesy; the error itself is reported anyway
        return None
