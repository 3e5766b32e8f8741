"""The overrides `fspo-verl fairness calibrate` prints compose, pasted as printed, with our presets
(`fspo-verl validate`) and with verl's own ppo_trainer (Hydra compose, as `main_ppo` does), and reach the
policy-loss dataclass the workers build."""

from __future__ import annotations

import pytest
from conftest import compose_verl
from verl.utils.config import omega_conf_to_dataclass

from fspo_verl.cli import main as cli
from fspo_verl.cli.validate import ComposeError, compose
from fspo_verl.losses.config import FSPOPolicyLossConfig

ARGS = ["fairness", "calibrate", "--target", "0.1", "--sigma", "0.01", "--drift", "kl"]


@pytest.fixture(scope="module")
def printed() -> list[str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(ARGS) == 0
    lines = [line.strip().removesuffix("\\").strip() for line in out.getvalue().splitlines() if line.startswith("  ")]
    assert lines and all("=" in line and " " not in line for line in lines), out.getvalue()
    return lines


def _constants(lines: list[str]) -> dict[str, str]:
    return {line.split("=")[0].rsplit(".", 1)[-1]: line.split("=", 1)[1] for line in lines if "fspo_" in line}


def _policy_loss(actor) -> FSPOPolicyLossConfig:
    loss = omega_conf_to_dataclass(actor).policy_loss
    assert isinstance(loss, FSPOPolicyLossConfig) and loss.loss_mode == "fspo"
    return loss


@pytest.mark.parametrize("preset", ["algorithm=fspo", "algorithm=gspo", "algorithm=grpo"])
def test_printed_overrides_work_with_our_presets(printed, preset, capsys):
    assert cli(["validate", preset, *printed]) == 0, capsys.readouterr().err[-3000:]
    loss = _policy_loss(compose([preset, *printed]).actor_rollout_ref.actor)
    want = _constants(printed)
    assert (loss.fspo_c_low, loss.fspo_c_high, loss.fspo_drift) == (float(want["fspo_c_low"]), float(want["fspo_c_high"]), "kl")


def test_printed_overrides_work_with_plain_main_ppo(printed):
    loss = _policy_loss(compose_verl(printed).actor_rollout_ref.actor)
    assert loss.fspo_c_low == float(_constants(printed)["fspo_c_low"]) and loss.fspo_drift == "kl"


def test_a_single_plus_would_fail_with_our_presets(printed):
    """Why ``++``: ``+key`` appends, and algorithm=fspo already defines the key."""
    single = [line.replace("++", "+", 1) for line in printed]
    with pytest.raises(ComposeError, match="already"):
        compose(["algorithm=fspo", *single])
