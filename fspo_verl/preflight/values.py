"""Numbers that type-check but make no sense, from one table of domains (:data:`DOMAINS`) and one table of
relations between keys (:data:`RELATIONS`).

verl accepts ``trainer.total_training_steps=0``, ``rollout.temperature=-1``, ``actor.clip_ratio_low=-0.2``
(the lower bound 1.2 lies above the ratio 1, so most tokens are clipped), ``rollout.top_p=1.5``,
``trainer.save_freq=0`` (no checkpoint, nothing said) or a train batch that is not a multiple of the
mini-batch (the last update silently smaller), and starts a run that trains wrongly or not at all;
``rollout.n=0`` and ``actor.ppo_epochs=0`` fail deep in a worker. Each key with a domain is one row of
:data:`DOMAINS`; each rule across keys is one function of :data:`RELATIONS`. A value that a preset derives
from another key (``rollout.n: ${oc.select:fspo_verl.task.group_size,8}``) is reported under the key the
user set (:func:`.messages.sourced_problem`).

Group-relative estimators. An estimator that normalises within the responses of one prompt gets the
prompt's ``index`` (uid) from verl's ``compute_advantage``; with ``rollout.n=1`` each group holds one
response, so GRPO's ``A_i = (r_i - mean_g r) / (std_g r + eps)`` and OPO's
``A_i = r_i - sum_g(l_j r_j) / sum_g(l_j)`` (arXiv 2505.23585) are 0 for every response, and nothing is
learnt. Which estimators are group-relative is read from the registry, not listed: those whose function
takes an ``index`` argument (grpo, grpo_vectorized, grpo_passk, rloo, rloo_vectorized, opo, opo_vectorized,
gdpo, gpg, reinforce_plus_plus_baseline, optimal_token_baseline, ... and any a plugin registers).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any

from omegaconf import DictConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.preflight.messages import problem, sourced_problem
from fspo_verl.preflight.registry import Findings, register_check

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"
#: loss modes whose clip_ratio_low is not a PPO lower bound: CISPO (arXiv 2506.13585) sets it large on purpose
#: so that the lower bound 1 - clip_ratio_low < 0 never binds (algorithm=cispo: 10)
NO_LOWER_CLIP_LOSSES = ("cispo",)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Domain:
    """A set of allowed values: ``test`` and how a message names it."""

    test: Callable[[Any], bool]
    #: "an integer >= 1", for "must be <text>"
    text: str


COUNT = Domain(lambda v: _is_int(v) and v >= 1, "an integer >= 1")
POSITIVE = Domain(lambda v: _is_real(v) and v > 0, "a number > 0")
NON_NEGATIVE = Domain(lambda v: _is_real(v) and v >= 0, "a number >= 0")
#: a probability mass kept (top_p), a memory share
UNIT = Domain(lambda v: _is_real(v) and 0 < v <= 1, "a number in (0, 1]")
#: a PPO clip ratio: the ratio is clipped to [1 - low, 1 + high]; low >= 1 removes the lower bound, < 0 puts it above 1
CLIP = Domain(lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)")
DISCOUNT = Domain(lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]")
#: verl's *_freq keys: every N steps, or -1 for never (0 is neither: verl's `step % 0` is never tested, nothing is saved)
FREQUENCY = Domain(lambda v: _is_int(v) and (v == -1 or v >= 1), "-1 (never) or an integer >= 1")
#: dual-clip PPO's c: the lower bound of the loss for negative advantages, c * A, needs c > 1
ABOVE_ONE = Domain(lambda v: _is_real(v) and v > 1, "a number > 1")


def _not_cispo(config: DictConfig) -> bool:
    return config_value(config, f"{ACTOR}.policy_loss.loss_mode") not in NO_LOWER_CLIP_LOSSES


def _cispo(config: DictConfig) -> bool:
    return not _not_cispo(config)


def _always(config: DictConfig) -> bool:
    return True


@dataclass(frozen=True)
class Rule:
    key: str
    domain: Domain
    #: what the key is, for the message
    what: str
    #: a good value for the fix
    example: str
    nullable: bool = False
    when: Callable[[DictConfig], bool] = _always


#: every numeric key with a domain, in the order of verl's ppo_trainer.yaml sections
DOMAINS: tuple[Rule, ...] = (
    Rule("trainer.total_training_steps", COUNT, "counts training steps (null: total_epochs x batches per epoch)", "100", nullable=True),
    Rule("trainer.total_epochs", COUNT, "counts passes over the training data", "1"),
    Rule("trainer.nnodes", COUNT, "counts nodes", "1"),
    Rule("trainer.n_gpus_per_node", COUNT, "counts workers per node", "1"),
    Rule("trainer.save_freq", FREQUENCY, "is the number of steps between checkpoints", "-1 (no checkpoints) or e.g. 10"),
    Rule("trainer.test_freq", FREQUENCY, "is the number of steps between validations", "-1 (no validation) or e.g. 10"),
    Rule("trainer.max_actor_ckpt_to_keep", COUNT, "counts the actor checkpoints kept (null: all)", "null", nullable=True),
    Rule("data.train_batch_size", COUNT, "counts prompts per step", "16"),
    Rule("data.val_batch_size", COUNT, "counts prompts per validation batch (null: the whole set)", "null", nullable=True),
    Rule("data.max_prompt_length", COUNT, "counts prompt tokens", "512"),
    Rule("data.max_response_length", COUNT, "counts response tokens", "512"),
    Rule(f"{ROLLOUT}.prompt_length", COUNT, "counts prompt tokens of the rollout", "512"),
    Rule(f"{ROLLOUT}.response_length", COUNT, "counts response tokens of the rollout", "512"),
    Rule(f"{ROLLOUT}.n", COUNT, "counts responses per prompt", "8"),
    Rule(f"{ROLLOUT}.val_kwargs.n", COUNT, "counts validation responses per prompt", "1"),
    Rule(f"{ROLLOUT}.temperature", NON_NEGATIVE, "is the sampling temperature (0 is greedy)", "1.0"),
    Rule(f"{ROLLOUT}.val_kwargs.temperature", NON_NEGATIVE, "is the validation sampling temperature (0 is greedy)", "1.0"),
    Rule(f"{ROLLOUT}.top_p", UNIT, "is the probability mass sampled from (1: all)", "1.0"),
    Rule(f"{ROLLOUT}.val_kwargs.top_p", UNIT, "is the probability mass sampled from in validation (1: all)", "1.0"),
    Rule(f"{ROLLOUT}.gpu_memory_utilization", UNIT, "is the share of GPU memory the rollout engine takes", "0.5"),
    Rule(f"{ACTOR}.ppo_mini_batch_size", COUNT, "counts prompts per update", "8"),
    Rule(f"{ACTOR}.ppo_epochs", COUNT, "counts passes over each batch", "1"),
    Rule(f"{ACTOR}.ppo_micro_batch_size_per_gpu", COUNT, "counts samples per forward pass", "4", nullable=True),
    Rule(f"{ACTOR}.optim.lr", POSITIVE, "is the actor's learning rate", "1e-6"),
    Rule(f"{ACTOR}.optim.weight_decay", NON_NEGATIVE, "is the actor's weight decay", "0.01"),
    Rule(f"{ACTOR}.grad_clip", POSITIVE, "is the gradient-norm clip", "1.0", nullable=True),
    Rule(f"{ACTOR}.clip_ratio", CLIP, "clips the ratio to [1 - clip_ratio, 1 + clip_ratio]", "0.2"),
    Rule(f"{ACTOR}.clip_ratio_low", CLIP, "sets the lower clip bound 1 - clip_ratio_low", "0.2", nullable=True, when=_not_cispo),
    Rule(f"{ACTOR}.clip_ratio_low", NON_NEGATIVE, "sets the lower clip bound 1 - clip_ratio_low (cispo: large for none)", "10.0", nullable=True, when=_cispo),
    Rule(f"{ACTOR}.clip_ratio_high", POSITIVE, "sets the upper clip bound 1 + clip_ratio_high (0 clips every ratio above 1)", "0.2", nullable=True),
    Rule(f"{ACTOR}.clip_ratio_c", ABOVE_ONE, "is dual-clip PPO's bound c (the loss of a negative advantage is at most c * |A|)", "3.0"),
    Rule(f"{ACTOR}.kl_loss_coef", NON_NEGATIVE, "is the KL loss coefficient (a negative one rewards drifting from the reference)", "0.001"),
    Rule(f"{ACTOR}.entropy_coeff", NON_NEGATIVE, "is the entropy bonus coefficient", "0"),
    Rule("algorithm.kl_ctrl.kl_coef", NON_NEGATIVE, "is the KL-in-reward coefficient", "0.001"),
    Rule("algorithm.gamma", DISCOUNT, "is the discount factor", "1.0"),
    Rule("algorithm.lam", DISCOUNT, "is GAE's lambda", "1.0"),
)


def _value(config: DictConfig, key: str, found: Findings):
    try:
        return config_value(config, key)
    except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve
        found.errors.append(problem(key, "...", f"does not resolve ({err})", "give a number"))
        return None


def domain_problems(config: DictConfig) -> Findings:
    found = Findings()
    for rule in DOMAINS:
        if not rule.when(config):
            continue
        value = _value(config, rule.key, found)
        if value is None and rule.nullable or rule.domain.test(value):
            continue
        kind = rule.domain.text + (" or null" if rule.nullable else "")
        found.errors.append(sourced_problem(config, rule.key, value, f"it {rule.what}; it must be {kind}", f"set {rule.key}={rule.example}"))
    return found


# --- relations between keys: each returns its messages (and may assume the keys it reads passed DOMAINS)


def _downsampling(config: DictConfig) -> bool:
    from fspo_verl.downsampling.settings import pods_enabled

    return bool(pods_enabled(config))


def batch_holds_whole_mini_batches(config: DictConfig) -> list[str]:
    """A step's batch is cut into mini-batches of ppo_mini_batch_size prompts: verl refuses a mini-batch larger
    than the batch in its own words, and silently makes the last update smaller when it does not divide it.
    (With PODS/GFPO down-sampling the geometry is checked in samples by ``fspo_verl.downsampling.settings``.)"""
    batch = config_value(config, "data.train_batch_size")
    mini = config_value(config, f"{ACTOR}.ppo_mini_batch_size")
    if not (_is_int(batch) and _is_int(mini) and batch >= 1 and mini >= 1) or _downsampling(config):
        return []
    key = f"{ACTOR}.ppo_mini_batch_size"
    if mini > batch:
        return [sourced_problem(config, key, mini, f"a mini-batch larger than the step's data.train_batch_size={batch} prompts cannot be filled", f"set {key} to at most {batch} (a divisor of it, e.g. {_divisor(batch, mini)})")]
    if batch % mini:
        return [sourced_problem(config, "data.train_batch_size", batch, f"not a multiple of {key}={mini}: the last update of every step would get only {batch % mini} prompts", f"set data.train_batch_size={batch - batch % mini} or {batch + mini - batch % mini}, or {key}={_divisor(batch, mini)}")]
    return []


def _divisor(batch: int, below: int) -> int:
    return max(d for d in range(1, min(batch, below) + 1) if batch % d == 0)


def clip_band_sane(config: DictConfig) -> list[str]:
    """With verl's dual clip the ratio's lower bound must stay below c: clip_ratio_c > 1 does that already;
    here: the PPO band [1 - low, 1 + high] must contain 1 (each side checked by DOMAINS) and not be the point 1."""
    low = config_value(config, f"{ACTOR}.clip_ratio_low")
    high = config_value(config, f"{ACTOR}.clip_ratio_high")
    if _is_real(low) and _is_real(high) and low == 0 and high == 0:
        key = f"{ACTOR}.clip_ratio_high"
        return [problem(key, high, f"with {ACTOR}.clip_ratio_low=0 the band [1, 1] clips every token, so nothing is learnt", f"set {key}=0.2 and {ACTOR}.clip_ratio_low=0.2")]
    return []


def lengths_fit_the_model(config: DictConfig) -> list[str]:
    """A sequence is prompt + response tokens; a model with learnt positions cannot see past
    ``max_position_embeddings`` (read from the local model's config.json, never loading weights)."""
    from fspo_verl.preflight.model_files import local_model_dir

    try:
        folder = local_model_dir(config_value(config, "actor_rollout_ref.model.path"))
    except Exception:  # noqa: BLE001 - an unresolvable path is named by model_files
        return []
    prompt, response = config_value(config, "data.max_prompt_length"), config_value(config, "data.max_response_length")
    if folder is None or not (_is_int(prompt) and _is_int(response)) or not (folder / "config.json").is_file():
        return []
    try:
        positions = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return []  # model_files names a broken config.json
    if not _is_int(positions) or prompt + response <= positions:
        return []
    return [sourced_problem(
        config, "data.max_response_length", response,
        f"data.max_prompt_length={prompt} + data.max_response_length={response} = {prompt + response} tokens exceed the model's "
        f"max_position_embeddings={positions} ({folder / 'config.json'})",
        (f"set data.max_response_length to at most {positions - prompt}, or choose a model with more positions"
         if prompt < positions else
         f"choose a model with more positions (a model= preset for this task), or set data.max_prompt_length below "
         f"{positions}"),
    )]


RELATIONS: tuple[Callable[[DictConfig], list[str]], ...] = (batch_holds_whole_mini_batches, clip_band_sane, lengths_fit_the_model)


def group_relative(estimator: str) -> bool:
    """Whether the registered estimator normalises within a prompt's group (its function takes ``index``)."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    fn = ADV_ESTIMATOR_REGISTRY.get(estimator)
    if fn is None:
        return False
    try:
        return "index" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def group_problems(config: DictConfig) -> list[str]:
    estimator = config_value(config, "algorithm.adv_estimator")
    n = config_value(config, f"{ROLLOUT}.n")
    if isinstance(estimator, str) and _is_int(n) and n == 1 and group_relative(estimator):
        return [sourced_problem(
            config, f"{ROLLOUT}.n", n,
            f"algorithm.adv_estimator={estimator} compares the responses of one prompt, and with one response per "
            "prompt every advantage is 0, so nothing is learnt",
            f"set {ROLLOUT}.n to 2 or more (our presets use 8), or algorithm.adv_estimator=reinforce_plus_plus / gae",
        )]
    return []


@register_check
def check_values(config: DictConfig) -> Findings:
    found = domain_problems(config)
    for relation in (*RELATIONS, group_problems):
        found.errors.extend(relation(config))
    return found
