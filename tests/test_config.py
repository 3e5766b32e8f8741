"""FSPOPolicyLossConfig: defaults, and a clear error for each bad value, raised through verl's validate_config."""

from __future__ import annotations

import pytest
from conftest import FSPO_TARGET, compose_verl
from hydra.errors import InstantiationException
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.workers.config import PolicyLossConfig

from fspo_verl.losses.config import FSPOPolicyLossConfig

KEY = "actor_rollout_ref.actor.policy_loss"


def _validate(*overrides: str) -> None:
    cfg = compose_verl([FSPO_TARGET, f"{KEY}.loss_mode=fspo", *overrides])
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def test_defaults():
    cfg = FSPOPolicyLossConfig()
    assert isinstance(cfg, PolicyLossConfig)
    assert (cfg.fspo_c_low, cfg.fspo_c_high, cfg.fspo_drift) == (0.0096, 0.0128, "none")
    assert (cfg.sspo_gate, cfg.sspo_tau_pos, cfg.sspo_tau_neg) == ("sigmoid", 1.0, 1.05)
    assert cfg.length_bins == [256, 512, 1024, 2048, 4096]
    # the documented rationale: GSPO's per-token band 3e-4/4e-4 times sqrt(1024)
    assert cfg.fspo_c_low == pytest.approx(3e-4 * 1024**0.5) and cfg.fspo_c_high == pytest.approx(4e-4 * 1024**0.5)


def test_valid_overrides_pass_verl_validate_config(capsys):
    _validate(f"+{KEY}.fspo_c_low=0.02", f"+{KEY}.fspo_drift=kl", f"+{KEY}.sspo_gate=arctan", f"+{KEY}.length_bins=[64,128]")
    assert "All configuration checks passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, fragment",
    [
        (f"+{KEY}.fspo_c_low=0", "fspo_c_low=0"),
        (f"+{KEY}.fspo_c_high=-0.1", "fspo_c_high=-0.1"),
        (f"+{KEY}.sspo_tau_pos=0", "sspo_tau_pos=0"),
        (f"+{KEY}.sspo_tau_neg=nan", "sspo_tau_neg=nan"),
        (f"+{KEY}.fspo_drift=mean", "fspo_drift='mean' is invalid: allowed values are 'none', 'kl'"),
        (f"+{KEY}.sspo_gate=tanh", "sspo_gate='tanh' is invalid: allowed values are 'sigmoid', 'arctan', 'identity'"),
        (f"+{KEY}.length_bins=[512,256]", "length_bins=[512, 256] is invalid"),
        (f"+{KEY}.length_bins=[0,256]", "length_bins=[0, 256] is invalid"),
        (f"+{KEY}.length_bins=[]", "length_bins=[] is invalid"),
    ],
)
def test_bad_values_fail_in_the_driver_with_key_value_and_fix(override, fragment):
    with pytest.raises(InstantiationException) as err:
        _validate(override)
    message = str(err.value)
    assert f"{KEY}.{fragment}" in message


def test_direct_construction_raises_valueerror():
    with pytest.raises(ValueError, match=r"length_bins=\[256, 256\] is invalid: .*strictly increasing"):
        FSPOPolicyLossConfig(length_bins=[256, 256])
    with pytest.raises(ValueError, match="fspo_c_low=True"):
        FSPOPolicyLossConfig(fspo_c_low=True)
