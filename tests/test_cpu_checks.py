"""check_cpu_config against verl's real Hydra config (ppo_trainer.yaml) plus the CPU demo's group files,
and the driver-side hook: ``python -m verl.trainer.main_ppo`` fails before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from fspo_verl.cpu import CPUConfigError, check_cpu_config, required_logical_cpus
from fspo_verl.demo.overrides import group_overrides


def verl_config(*extra: str):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=[*group_overrides(), *extra])


def test_demo_groups_pass():
    cfg = verl_config()
    check_cpu_config(cfg)
    assert required_logical_cpus(cfg) == 2 + 2 + 1 + 1 == cfg.ray_kwargs.ray_init.num_cpus


@pytest.mark.parametrize(
    ("override", "key", "fix"),
    [
        ("actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.name='vllm'", "actor_rollout_ref.rollout.name=hf"),
        (
            "++actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2",
            "attn_implementation='flash_attention_2'",
            "attn_implementation=sdpa",
        ),
        ("actor_rollout_ref.actor.strategy=fsdp", "actor_rollout_ref.actor.strategy='fsdp'", "strategy=fsdp2"),
        ("ray_kwargs.ray_init.num_cpus=4", "ray_kwargs.ray_init.num_cpus=4", "ray_kwargs.ray_init.num_cpus=6"),
        ("++ray_kwargs.ray_init.num_gpus=0", "ray_kwargs.ray_init.num_gpus=0", "num_gpus=2"),
        ("trainer.device=cuda", "trainer.device='cuda'", "trainer.device=cpu"),
    ],
)
def test_bad_setting_names_key_value_and_fix(override, key, fix):
    with pytest.raises(CPUConfigError) as err:
        check_cpu_config(verl_config(override))
    assert key in str(err.value) and fix in str(err.value)


def test_flash_attention_is_the_default_and_rejected():
    from omegaconf import open_dict

    cfg = verl_config()
    with open_dict(cfg):
        del cfg.actor_rollout_ref.model.override_config["attn_implementation"]
    with pytest.raises(CPUConfigError, match="flash-attention"):
        check_cpu_config(cfg)


def test_logical_cpus_of_a_running_cluster_are_checked():
    with pytest.raises(CPUConfigError, match="TransferQueue would wait forever"):
        check_cpu_config(verl_config(), ray_resources={"CPU": 2.0, "GPU": 2.0})
    check_cpu_config(verl_config(), ray_resources={"CPU": 6.0, "GPU": 2.0})


def test_main_ppo_fails_in_the_driver_before_ray(tmp_path):
    # the real entry point; vllm on the CPU backend and too few logical CPUs, both reported at once
    env = dict(os.environ, VERL_PLATFORM="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", *group_overrides(), "actor_rollout_ref.rollout.name=vllm",
         "ray_kwargs.ray_init.num_cpus=3", "algorithm.adv_estimator=grpo"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "CPUConfigError" in out and "rollout.name='vllm'" in out and "ray_kwargs.ray_init.num_cpus=3" in out
    assert "ray init kwargs" not in out  # main_ppo prints this right before ray.init


def test_joining_a_running_cluster_checks_its_resources_and_drops_what_ray_refuses(monkeypatch):
    """RAY_ADDRESS set: the cluster's resources (not this host's cores, not ray_init.num_cpus) are checked, and
    the preset's num_cpus/num_gpus are not passed to ray.init (Ray raises on them for a running cluster)."""
    import fspo_verl.preflight.cpu as checks_module
    from fspo_verl.cpu import FORWARDED_ENVIRONMENT, check_for_ray

    seen = []
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    monkeypatch.setattr(checks_module, "cluster_resources", lambda address: seen.append(address) or {"CPU": 12.0, "GPU": 2.0})
    cfg = verl_config("trainer.n_gpus_per_node=1", "trainer.nnodes=2")
    assert check_for_ray(cfg) == {"CPU": 12.0, "GPU": 2.0} and seen == ["http://head:8265"]
    assert cfg.ray_kwargs.ray_init.num_cpus is None and cfg.ray_kwargs.ray_init.num_gpus is None
    env_vars = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env_vars["VERL_PLATFORM"] == "cpu" and set(env_vars) <= set(FORWARDED_ENVIRONMENT)

    monkeypatch.setattr(checks_module, "cluster_resources", lambda address: {"CPU": 4.0, "GPU": 1.0})
    with pytest.raises(CPUConfigError) as err:
        check_for_ray(verl_config("trainer.n_gpus_per_node=1", "trainer.nnodes=2"))
    assert "running Ray cluster has 4 logical CPUs" in str(err.value) and "ray start --num-cpus=N" in str(err.value)
    assert "running Ray cluster has 1 logical GPUs" in str(err.value) and "ray start --num-gpus=N" in str(err.value)


def test_an_unreachable_cluster_is_an_error_naming_ray_address(monkeypatch):
    from fspo_verl.common.ray_cluster import cluster_resources
    from fspo_verl.cpu import check_for_ray

    cluster_resources.cache_clear()
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(CPUConfigError, match=r"RAY_ADDRESS=http://127.0.0.1:9.*Fix: point RAY_ADDRESS"):
        check_for_ray(verl_config())
