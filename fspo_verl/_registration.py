"""What fspo_verl registers into verl, and how to check that it is there.

``register_all`` runs on ``import fspo_verl``, which verl triggers in every process through the
``verl.plugins`` entry point. Core registrations (losses, estimators) import only torch and modules every
verl 0.9.x install has; if one fails, the import fails (and ``fspo-verl doctor`` shows why). Optional
components that need heavier verl modules register through ``OPTIONAL_COMPONENTS``: a failure there is
logged at WARNING and kept in ``LOAD_ERRORS`` instead of dropping the whole plugin.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable

logger = logging.getLogger("fspo_verl")

#: modules whose import registers core names; they must import cleanly on every verl 0.9.x install
CORE_MODULES = ("fspo_verl.losses", "fspo_verl.advantages", "fspo_verl.downsampling")

#: modules with a ``register()`` function, imported and called in order; failures are recorded, not raised
OPTIONAL_COMPONENTS: tuple[str, ...] = (
    "fspo_verl.downsampling.settings",  # ${fspo_mini_batch:P}: the data presets' mini-batch, fitted to PODS/GFPO's kept samples
    "fspo_verl.downsampling.polling",  # trainer.v1.sampler.poll_interval on every V1 replay buffer (no 2-s wait per step)
    "fspo_verl.cpu",  # `cpu` platform + `hf` rollout (replica and in-worker adapter); fixes only with VERL_PLATFORM=cpu
    "fspo_verl.demo",  # ${fspo_demo_asset:KEY}: the CPU demo's model and data paths, built on first use
    "fspo_verl.diagnostics.loss_hook",  # per-length-bin clip counts for verl's built-in losses (ppo_loss lookup)
    "fspo_verl.diagnostics.fairness_number",  # per-step length-fairness numbers from those counts (Tracking.log)
)

#: component module -> formatted traceback of its failure in this process
LOAD_ERRORS: dict[str, str] = {}


def _policy_losses() -> set[str]:
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    return set(POLICY_LOSS_REGISTRY)


def _adv_estimators() -> set[str]:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    return set(ADV_ESTIMATOR_REGISTRY)


def _platforms() -> set[str]:
    from verl.plugin.platform.platform_manager import PlatformRegistry

    return set(PlatformRegistry.registered_names())


def _rollout_replicas() -> set[str]:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return set(RolloutReplicaRegistry._registry)


def _rollout_adapters() -> set[str]:
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    return {name for name, mode in _ROLLOUT_REGISTRY if mode == "async"}


def _downsamplers() -> set[str]:
    from fspo_verl.downsampling.rules import DOWNSAMPLERS

    return set(DOWNSAMPLERS)


def _replay_buffers() -> set[str]:
    # Loaded by verl from trainer.v1.sampler.custom_sampler, not on `import verl`; the doctor imports it here
    # so that a broken install (e.g. no transfer_queue) shows up before a run.
    import fspo_verl.downsampling.replay_buffer as pods

    return {name for name in (pods.SYNC_CLASS, pods.ASYNC_CLASS) if hasattr(pods, name)}


def _resolvers() -> set[str]:
    from omegaconf import OmegaConf

    from fspo_verl.demo import RESOLVER as DEMO_ASSET
    from fspo_verl.downsampling.settings import MINI_BATCH_RESOLVER

    return {name for name in (DEMO_ASSET, MINI_BATCH_RESOLVER) if OmegaConf.has_resolver(name)}


def _loss_hooks() -> set[str]:
    # The hook patches ppo_loss's module when it is imported; import it as an actor worker does.
    import verl.workers.utils.losses  # noqa: F401

    from fspo_verl.diagnostics.loss_hook import installed

    return {"length_bins"} if installed() else set()


def _metric_hooks() -> set[str]:
    import verl.utils.tracking  # noqa: F401

    from fspo_verl.diagnostics.fairness_number import installed

    return {"length_fairness"} if installed() else set()


#: kind -> function returning the names present in that registry of the current process
REGISTRIES: dict[str, Callable[[], set[str]]] = {
    "policy_loss": _policy_losses,
    "adv_estimator": _adv_estimators,
    "platform": _platforms,
    "rollout_replica": _rollout_replicas,
    "rollout_adapter": _rollout_adapters,
    "downsampler": _downsamplers,
    "replay_buffer": _replay_buffers,
    "loss_hook": _loss_hooks,
    "resolver": _resolvers,
    "metric_hook": _metric_hooks,
}

#: every (kind, name) fspo_verl registers; ``fspo-verl doctor`` checks each in a fresh ``import verl``
EXPECTED: tuple[tuple[str, str], ...] = (
    ("policy_loss", "fspo"),
    ("policy_loss", "fspo_adaptive"),
    ("policy_loss", "sspo"),
    ("adv_estimator", "opo_vectorized"),
    ("platform", "cpu"),
    ("rollout_replica", "hf"),
    ("rollout_adapter", "hf"),
    ("downsampler", "max_variance"),
    ("downsampler", "max_reward"),
    ("downsampler", "random"),
    ("downsampler", "shortest"),
    ("downsampler", "token_efficiency"),
    ("replay_buffer", "PODSReplayBuffer"),
    ("replay_buffer", "PODSReplayBufferAsync"),
    ("loss_hook", "length_bins"),  # per-bin clip counts for verl's built-in losses, around ppo_loss's lookup
    ("resolver", "fspo_demo_asset"),  # the CPU demo's model and data paths (fspo_verl.demo)
    ("resolver", "fspo_mini_batch"),  # the data presets' ppo_mini_batch_size (fspo_verl.downsampling.settings)
    ("metric_hook", "length_fairness"),  # one fairness number per loss and step, added in Tracking.log
)


def register_all() -> None:
    for module in CORE_MODULES:
        importlib.import_module(module)
    for module in OPTIONAL_COMPONENTS:
        try:
            importlib.import_module(module).register()
        except Exception:  # noqa: BLE001 - recorded and reported by `fspo-verl doctor`
            LOAD_ERRORS[module] = traceback.format_exc()
            logger.warning("fspo_verl: optional component %s failed to register:\n%s", module, LOAD_ERRORS[module])


def missing() -> list[tuple[str, str]]:
    """(kind, name) pairs of ``EXPECTED`` absent from this process's registries."""
    present = {kind: lookup() for kind, lookup in REGISTRIES.items()}
    return [(kind, name) for kind, name in EXPECTED if name not in present.get(kind, set())]
