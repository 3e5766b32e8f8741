"""``fspo-verl train | validate | list``: compose our presets over verl's ppo_trainer, check, launch.

The root config ``fspo_verl/configs/fspo_trainer.yaml`` extends verl's own ``ppo_trainer.yaml`` through
Hydra's search path (``pkg://verl.trainer.config``), so every verl key keeps its default and meaning.
Groups (``fspo-verl list`` shows the options):

    algorithm=    fspo sspo opo pods pods_128_32 gfpo gspo gmpo sapo cispo grpo
    downsampling= none pods gfpo                (algorithm=pods/gfpo select one for you)
    model=        tiny_cpu qwen2_5_0_5b_instruct qwen2_5_3b_instruct qwen3_1_7b_base qwen3_8b_base ...
    data=         synthetic_cpu gsm8k math      (options of verl's own `data` group)
    cluster=      cpu 1gpu 8gpu multinode

Any verl key can be overridden as usual (``trainer.total_training_steps=500``). ``train`` composes,
runs every check of ``fspo_verl.checks`` and verl's ``validate_config`` in this process, and only then
starts Ray and verl's V1 TaskRunner, exactly as ``python -m verl.trainer.main_ppo`` would.

A cluster preset that needs driver-side preparation (the CPU backend: platform env vars, local assets)
sets ``fspo_verl.backend``; ``train`` then calls ``fspo_verl.<backend>.prepare_run(config)`` before Ray
starts.
"""

from __future__ import annotations

import importlib
import sys
from importlib import resources

from omegaconf import DictConfig, OmegaConf

from fspo_verl.checks import Findings, run_checks

CONFIG_MODULE = "fspo_verl.configs"
ROOT_CONFIG = "fspo_trainer"
GROUPS = ("algorithm", "downsampling", "model", "data", "cluster")


class ComposeError(Exception):
    """The overrides do not compose (unknown group option, bad syntax, unknown key)."""


def compose(overrides: list[str]) -> DictConfig:
    """verl's ppo_trainer + our presets + ``overrides``, composed by Hydra (not resolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            return hydra_compose(config_name=ROOT_CONFIG, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ComposeError(f"cannot compose the config from {list(overrides)}: {err}") from None
    finally:
        GlobalHydra.instance().clear()


def presets(group: str) -> list[str]:
    """Option names we ship for a group (verl's own options of the same group are not listed)."""
    folder = resources.files(CONFIG_MODULE) / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _print_findings(found: Findings) -> None:
    for message in found.warnings:
        print(f"WARNING: {message}", file=sys.stderr)
    for message in found.errors:
        print(f"ERROR: {message}", file=sys.stderr)


def _compose_and_check(argv: list[str]) -> tuple[DictConfig | None, Findings]:
    try:
        config = compose(argv)
    except ComposeError as err:
        return None, Findings(errors=[str(err)])
    return config, run_checks(config)


def validate_main(argv: list[str]) -> int:
    """Compose and check only. Prints the resolved config, or every problem found; exit 1 on any error."""
    config, found = _compose_and_check(argv)
    if config is not None and not found.errors:
        try:
            print(OmegaConf.to_yaml(config, resolve=True))
        except Exception as err:  # noqa: BLE001 - an interpolation that cannot resolve is a problem too
            found.errors.append(f"the config does not resolve: {type(err).__name__}: {err}")
    _print_findings(found)
    if found.errors:
        print(f"fspo-verl validate: {len(found.errors)} problem(s) found", file=sys.stderr)
        return 1
    print("fspo-verl validate: OK", file=sys.stderr)
    return 0


def prepare_backend(config: DictConfig) -> None:
    backend = OmegaConf.select(config, "fspo_verl.backend", default=None)
    if backend:
        importlib.import_module(f"fspo_verl.{backend}").prepare_run(config)


def train_main(argv: list[str]) -> int:
    """Compose, check in the driver, then run verl's V1 trainer (``verl.trainer.main_ppo.run_ppo``)."""
    config, found = _compose_and_check(argv)
    _print_findings(found)
    if config is None or found.errors:
        print("fspo-verl train: not started; fix the problems above (fspo-verl validate shows them too)", file=sys.stderr)
        return 1
    prepare_backend(config)

    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    run_ppo(config, task_runner_class=TaskRunnerV1)
    return 0


def list_main(argv: list[str]) -> int:
    """The presets of each group and the names fspo_verl registers into verl."""
    from fspo_verl import _registration

    for group in GROUPS:
        print(f"{group + '=':<14} {' '.join(presets(group))}")
    present = {kind: lookup() for kind, lookup in _registration.REGISTRIES.items()}
    ours = {(kind, name) for kind, name in _registration.EXPECTED}
    print("\nregistered (ours marked *):")
    for kind, names in present.items():
        listed = " ".join(f"{n}*" if (kind, n) in ours else n for n in sorted(names))
        print(f"  {kind + ':':<15} {listed}")
    return 0


main = train_main
