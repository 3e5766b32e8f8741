"""A preset never hard-codes a key that verl derives from another key (the ignored-setting class).

verl's ppo_trainer.yaml derives some keys by interpolation, e.g. ``rollout.response_length:
${oc.select:data.max_response_length,512}`` and ``ref.strategy: ${actor_rollout_ref.actor.strategy}``. A preset
that sets such a key to a literal silently ignores the key users set: with ``data=synthetic_cpu``,
``data.max_response_length=16`` used to leave the rollout at 4 tokens.
"""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from fspo_verl.cli.validate import GROUPS, compose, presets

ROLLOUT = "actor_rollout_ref.rollout"


def _interpolated_keys(node: DictConfig, path: str = "") -> dict[str, str]:
    """dotted key -> interpolation, for every leaf of ``node`` that is an interpolation."""
    found = {}
    for key in node.keys():
        dotted = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_interpolation(node, key):
            found[dotted] = node._get_node(key)._value()
        elif isinstance(node._get_node(key), DictConfig):
            found.update(_interpolated_keys(node[key], dotted))
    return found


@pytest.fixture(scope="module")
def verl_derived() -> dict[str, str]:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("verl.trainer.config", version_base=None):
            return _interpolated_keys(hydra_compose(config_name="ppo_trainer"))
    finally:
        GlobalHydra.instance().clear()


def _literal(config: DictConfig, dotted: str):
    parent, _, leaf = dotted.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    if not isinstance(node, DictConfig) or leaf not in node or OmegaConf.is_interpolation(node, leaf):
        return None
    value = node._get_node(leaf)
    return None if isinstance(value, (DictConfig, ListConfig)) else value._value()


OPTIONS = [(group, option) for group in GROUPS for option in presets(group)]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_no_preset_hard_codes_a_key_verl_derives(group, option, verl_derived):
    config = compose([f"{group}={option}"])
    hard_coded = {k: (_literal(config, k), v) for k, v in verl_derived.items() if _literal(config, k) is not None}
    assert not hard_coded, f"{group}={option} replaces verl's derived keys with literals (users' settings of the source key are ignored): {hard_coded}"


def test_synthetic_cpu_lengths_follow_the_data_keys():
    config = compose(["data=synthetic_cpu", "data.max_prompt_length=32", "data.max_response_length=16"])
    assert OmegaConf.select(config, f"{ROLLOUT}.prompt_length") == 32
    assert OmegaConf.select(config, f"{ROLLOUT}.response_length") == 16
    default = compose(["data=synthetic_cpu"])
    assert (OmegaConf.select(default, f"{ROLLOUT}.prompt_length"), OmegaConf.select(default, f"{ROLLOUT}.response_length")) == (10, 4)  # data/synthetic_cpu.yaml: five digits of two tokens; four-token answers


@pytest.mark.parametrize("cluster", ["cpu", "1gpu", "8gpu", "multinode"])
def test_ref_strategy_follows_the_actor(cluster):
    config = compose([f"cluster={cluster}", "actor_rollout_ref.actor.strategy=fsdp"])
    assert OmegaConf.select(config, "actor_rollout_ref.ref.strategy") == "fsdp"
