"""Clip rate per response-length bin, simulated (``fspo-verl fairness simulate``): the central figure of FSPO
(arXiv 2509.09177). Draw response
lengths L_i and per-token log-ratios d_{i,t} iid, then ask each method's trust region which sequences it
clips. Under a CLT the sequence log-ratio S_i = sum_t d_{i,t} ~ N(L_i*mu, L_i*sigma^2), so

    fixed PPO band on exp(S_i)      clips P(|S_i| > c)          -> grows with L   (long responses clipped most)
    GSPO's band on exp(S_i / L_i)   clips P(|S_i/L_i| > eps)    -> shrinks with L (long responses clipped least)
    FSPO's band c*sqrt(L_i)         clips P(|S_i|/sqrt(L_i) > c) -> flat in L     (when the centre L*mu is right)

The "clipped" decision of every method comes from ``fspo_verl.diagnostics.clip_rates``, i.e. from the very tensors
and functions the losses use; per-bin counting reuses ``fspo_verl.losses.length_bins``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fspo_verl.diagnostics.clip_rates import CLIP_INDICATORS, sequence_clipped
from fspo_verl.losses.config import FSPOPolicyLossConfig
from fspo_verl.losses.length_bins import bin_names, per_bin_counts

TOKEN_DISTS = ("normal", "t")
LENGTH_DISTS = ("loguniform", "uniform", "lognormal")
#: the four methods of the paper's figure; ``--methods all`` adds verl's vanilla, geo_mean, sapo and cispo
DEFAULT_METHODS = ("ppo_seq", "gspo", "fspo", "sspo")
#: tokens per simulated (bs, T) chunk: 4M float32 = 16 MiB per tensor, our choice to bound memory
_CHUNK_TOKENS = 1 << 22


@dataclass
class SimulationSpec:
    """What to draw. Defaults are our choice: sigma=0.01 puts FSPO's default band near a 27% clip rate
    (a visible figure); log-uniform lengths put about the same number of sequences in every log2 bin, so
    every bin's rate has the same sampling error (uniform lengths leave the 16-32 bin nearly empty)."""

    sigma: float = 0.01
    mu: float = 0.0
    token_dist: str = "normal"
    t_df: float = 5.0
    length_dist: str = "loguniform"
    min_len: int = 16
    max_len: int = 8192
    lognormal_median: float = 1024.0
    lognormal_sigma: float = 1.0
    n: int = 20000
    seed: int = 0
    edges: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048, 4096])

    def validate(self) -> None:
        def bad(flag: str, value: Any, fix: str) -> ValueError:
            return ValueError(f"fspo-verl fairness: {flag}={value!r} is invalid: {fix}")

        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise bad("--sigma", self.sigma, "the per-token log-ratio std must be a finite number > 0, e.g. 0.01")
        if not math.isfinite(self.mu):
            raise bad("--mu", self.mu, "the per-token mean log-ratio must be finite, e.g. 0 or -sigma^2/2")
        if self.token_dist not in TOKEN_DISTS:
            raise bad("--token-dist", self.token_dist, f"choose one of {', '.join(TOKEN_DISTS)}")
        if self.token_dist == "t" and not self.t_df > 2:
            raise bad("--t-df", self.t_df, "Student-t needs df > 2 for a finite variance, e.g. 5")
        if self.length_dist not in LENGTH_DISTS:
            raise bad("--lengths", self.length_dist, f"choose one of {', '.join(LENGTH_DISTS)}")
        if not 1 <= self.min_len < self.max_len:
            raise bad("--min-len/--max-len", (self.min_len, self.max_len), "need 1 <= min-len < max-len, e.g. 16 8192")
        if self.length_dist == "lognormal" and not (self.lognormal_median > 0 and self.lognormal_sigma > 0):
            raise bad("--lognormal", (self.lognormal_median, self.lognormal_sigma), "median and sigma must be > 0")
        if self.n < 1:
            raise bad("--n", self.n, "draw at least 1 sequence, e.g. 20000")
        if not self.edges or any(b <= a for a, b in zip(self.edges, self.edges[1:])) or self.edges[0] <= 0:
            raise bad("--bins", self.edges, "give strictly increasing positive upper edges, e.g. 256,512,1024")


@dataclass
class MethodConstants:
    """Each method's trust-region constants. Defaults: each paper's published or verl's default values;
    FSPO's and SSPO's live in ``policy_loss``, the config the losses read (shipped defaults)."""

    ppo_clip_low: float = 0.2
    ppo_clip_high: float = 0.2
    gspo_clip_low: float = 3e-4
    gspo_clip_high: float = 4e-4
    geo_mean_clip: float = 0.4
    sapo_tau_pos: float = 1.0
    sapo_tau_neg: float = 1.05
    # CISPO (arXiv 2506.13585): no lower bound; upper 0.28 is our choice (configs/algorithm/cispo.yaml)
    cispo_clip_low: float = 10.0
    cispo_clip_high: float = 0.28
    policy_loss: FSPOPolicyLossConfig = field(default_factory=FSPOPolicyLossConfig)

    @classmethod
    def with_policy_loss(cls, **fields: Any) -> MethodConstants:
        """Defaults, with these ``FSPOPolicyLossConfig`` fields (fspo_c_low=..., fspo_drift=..., ...)."""
        return cls(policy_loss=FSPOPolicyLossConfig(**fields))

    def actor_configs(self) -> dict[str, Any]:
        """method -> the verl actor config its loss (and clip indicator) reads."""
        from verl.workers.config.actor import FSDPActorConfig

        def actor(**kw: Any) -> Any:
            return FSDPActorConfig(rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=self.policy_loss, **kw)

        ppo = actor(clip_ratio_low=self.ppo_clip_low, clip_ratio_high=self.ppo_clip_high)
        return {
            "ppo_seq": ppo,
            "vanilla": ppo,
            "gspo": actor(clip_ratio_low=self.gspo_clip_low, clip_ratio_high=self.gspo_clip_high),
            "geo_mean": actor(clip_ratio_low=self.geo_mean_clip, clip_ratio_high=self.geo_mean_clip),
            "sapo": actor(tau_pos=self.sapo_tau_pos, tau_neg=self.sapo_tau_neg),
            "cispo": actor(clip_ratio_low=self.cispo_clip_low, clip_ratio_high=self.cispo_clip_high),
            "fspo": actor(),
            "sspo": actor(),
        }


@dataclass
class SimulationResult:
    """Per-bin counts. ``seqs`` (K+1,) sequences per bin; ``clipped[method]`` (K+1,) clipped per bin."""

    spec: SimulationSpec
    constants: MethodConstants
    bins: list[str]
    seqs: list[int]
    clipped: dict[str, list[int]]

    def rates(self, method: str) -> list[float | None]:
        """Clip rate per bin; None for an empty bin (never NaN)."""
        return [c / n if n else None for c, n in zip(self.clipped[method], self.seqs)]

    def overall_rate(self, method: str) -> float:
        return sum(self.clipped[method]) / max(sum(self.seqs), 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": asdict(self.spec),
            "constants": asdict(self.constants),
            "bins": self.bins,
            "seqs": self.seqs,
            "clipped": self.clipped,
            "rates": {m: self.rates(m) for m in self.clipped},
        }


def draw_lengths(spec: SimulationSpec, gen: torch.Generator) -> torch.Tensor:
    """(n,) long response lengths in [min_len, max_len]; lognormal is truncated (out-of-range draws redrawn)."""
    lo, hi = spec.min_len, spec.max_len
    if spec.length_dist == "uniform":
        return torch.randint(lo, hi + 1, (spec.n,), generator=gen)  # (n,)
    if spec.length_dist == "loguniform":
        u = torch.rand(spec.n, generator=gen, dtype=torch.float64)  # (n,)
        log_len = math.log(lo) + u * (math.log(hi + 1) - math.log(lo))  # (n,)
        return log_len.exp().floor().long().clamp(lo, hi)  # (n,)
    out = torch.empty(0, dtype=torch.long)
    while out.numel() < spec.n:
        z = torch.randn(2 * spec.n, generator=gen, dtype=torch.float64)  # (2n,)
        draw = (math.log(spec.lognormal_median) + spec.lognormal_sigma * z).exp().round().long()  # (2n,)
        out = torch.cat([out, draw[(draw >= lo) & (draw <= hi)]])
    return out[: spec.n]  # (n,)


def draw_log_ratios(spec: SimulationSpec, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """(bs, T) float32 iid token log-ratios with mean mu and std sigma (normal, or Student-t rescaled)."""
    if spec.token_dist == "normal":
        z = torch.randn(shape, generator=gen)  # (bs, T)
    else:
        # t = N / sqrt(chi2_df / df), rescaled to unit variance (var t = df / (df - 2)).
        normal = torch.randn(shape, generator=gen)  # (bs, T)
        chi2 = torch.distributions.Chi2(torch.tensor(spec.t_df)).sample(shape)  # (bs, T), global RNG (no generator arg)
        z = normal / torch.sqrt(chi2 / spec.t_df) * math.sqrt((spec.t_df - 2.0) / spec.t_df)  # (bs, T)
    return spec.mu + spec.sigma * z  # (bs, T)


def _chunks(sorted_lengths: torch.Tensor) -> list[tuple[int, int]]:
    """[start, stop) ranges over ascending lengths such that rows * max length <= _CHUNK_TOKENS."""
    ranges, start = [], 0
    n = sorted_lengths.numel()
    while start < n:
        stop = start + 1
        while stop < n and (stop + 1 - start) * int(sorted_lengths[stop]) <= _CHUNK_TOKENS:
            stop += 1
        ranges.append((start, stop))
        start = stop
    return ranges


def simulate(
    spec: SimulationSpec | None = None,
    constants: MethodConstants | None = None,
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
) -> SimulationResult:
    """Draw ``spec.n`` sequences and count, per length bin, the sequences each method clips.

    Old log-probs are 0 and new log-probs are the drawn d, so ``log_prob - old_log_prob = d`` exactly as a
    loss sees it; the sequence advantage A_i = +-1 with equal probability (only its sign matters: it picks
    SAPO's and SSPO's temperature).
    """
    spec = spec or SimulationSpec()
    constants = constants or MethodConstants()
    spec.validate()
    unknown = [m for m in methods if m not in CLIP_INDICATORS]
    if unknown:
        raise ValueError(f"fspo-verl fairness: --methods has unknown {unknown}: choose from {', '.join(CLIP_INDICATORS)}")
    configs = constants.actor_configs()
    gen = torch.Generator().manual_seed(spec.seed)
    lengths = draw_lengths(spec, gen).sort().values  # (n,) ascending, so chunks pad little
    n_bins = len(spec.edges) + 1
    seqs = torch.zeros(n_bins)  # (K+1,)
    clipped = {m: torch.zeros(n_bins) for m in methods}  # (K+1,) each

    # torch has no generator argument for the gamma sampler; seed the global RNG for Student-t draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        for start, stop in _chunks(lengths):
            chunk_len = lengths[start:stop]  # (bs,)
            bs, width = chunk_len.numel(), int(chunk_len[-1])
            d = draw_log_ratios(spec, (bs, width), gen)  # (bs, T)
            mask = torch.arange(width).unsqueeze(0) < chunk_len.unsqueeze(1)  # (bs, T) bool
            sign = torch.where(torch.rand(bs, generator=gen) < 0.5, -1.0, 1.0)  # (bs,)
            adv = sign.unsqueeze(1).expand(bs, width)  # (bs, T), a view
            old = torch.zeros_like(d)  # (bs, T)
            length_f = chunk_len.float()  # (bs,)
            valid = chunk_len > 0  # (bs,)
            for method in methods:
                flags = sequence_clipped(method, old, d, adv, mask, configs[method])  # (bs,)
                n_per_bin, c_per_bin = per_bin_counts(length_f, valid, flags, spec.edges)  # (K+1,) each
                clipped[method] += c_per_bin
            seqs += n_per_bin
    return SimulationResult(
        spec=spec,
        constants=constants,
        bins=bin_names(spec.edges),
        seqs=[int(x) for x in seqs.tolist()],
        clipped={m: [int(x) for x in c.tolist()] for m, c in clipped.items()},
    )


def format_table(result: SimulationResult) -> str:
    """A fixed-width table: one row per bin, one column per method, plus the spread (max - min) row."""
    methods = list(result.clipped)
    width = max(9, *(len(m) + 1 for m in methods))
    head = f"{'length bin':<16}{'seqs':>8}" + "".join(f"{m:>{width}}" for m in methods)
    lines = [head, "-" * len(head)]
    for i, name in enumerate(result.bins):
        cells = "".join(
            f"{'-':>{width}}" if result.rates(m)[i] is None else f"{result.rates(m)[i]:>{width}.3f}" for m in methods
        )
        lines.append(f"{name.removeprefix('len_'):<16}{result.seqs[i]:>8}" + cells)
    lines.append("-" * len(head))
    lines.append(f"{'all':<16}{sum(result.seqs):>8}" + "".join(f"{result.overall_rate(m):>{width}.3f}" for m in methods))
    spreads = []
    for m in methods:
        filled = [r for r in result.rates(m) if r is not None]
        spreads.append(max(filled) - min(filled) if filled else 0.0)
    lines.append(f"{'spread max-min':<24}" + "".join(f"{s:>{width}.3f}" for s in spreads))
    return "\n".join(lines)


#: matplotlib style per method, so every figure draws a method the same way
METHOD_STYLE = {
    "ppo_seq": dict(color="tab:red", marker="s", label="fixed PPO band on exp(S)"),
    "vanilla": dict(color="tab:pink", marker="v", label="vanilla (token clip, any token)"),
    "gspo": dict(color="tab:blue", marker="o", label="GSPO band on exp(S/L)"),
    "geo_mean": dict(color="tab:olive", marker="^", label="GMPO (geo_mean, any token)"),
    "sapo": dict(color="tab:purple", marker="x", label="SAPO gate (any token >1%)"),
    "cispo": dict(color="tab:brown", marker="*", label="CISPO weight clip (any token)"),
    "fspo": dict(color="tab:green", marker="D", label="FSPO sqrt(L) band"),
    "sspo": dict(color="tab:orange", marker="P", label="SSPO gating (>1%)"),
}


def plot(result: SimulationResult, out: str | Path) -> Path:
    """Write a PNG: clip rate (y) per length bin (x), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8.5, 5.0), dpi=120)
    xs = list(range(len(result.bins)))
    for method in result.clipped:
        rates = result.rates(method)
        ys = [float("nan") if r is None else r for r in rates]  # gaps for empty bins
        ax.plot(xs, ys, linewidth=2, markersize=6, **METHOD_STYLE[method])
    labels = [_bin_label(name, result.spec.min_len, result.spec.max_len) for name in result.bins]
    ax.set_xticks(xs, labels, rotation=30, ha="right")
    ax.set_xlabel("response length L (bin)")
    ax.set_ylabel("share of sequences clipped / gated")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    spec, k, p = result.spec, result.constants, result.constants.policy_loss
    ax.set_title(
        f"Clip rate by response length  (d ~ {spec.token_dist}(mu={spec.mu:g}, sigma={spec.sigma:g}), "
        f"L ~ {spec.length_dist}[{spec.min_len}, {spec.max_len}], n={spec.n})",
        fontsize=9,
    )
    ax.text(
        0.01,
        0.98,
        f"PPO eps={k.ppo_clip_low:g}/{k.ppo_clip_high:g}   GSPO eps={k.gspo_clip_low:g}/{k.gspo_clip_high:g}\n"
        f"FSPO c={p.fspo_c_low:g}/{p.fspo_c_high:g} drift={p.fspo_drift}   SSPO gate={p.sspo_gate}",
        transform=ax.transAxes,
        va="top",
        fontsize=8,
        family="monospace",
    )
    ax.legend(loc="center left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _bin_label(name: str, min_len: int, max_len: int) -> str:
    """'len_0_32' -> '16-32' and 'len_4096_inf' -> '4096-8192' for lengths drawn in [min_len, max_len]."""
    lo, hi = name.removeprefix("len_").split("_")
    return f"{max(int(lo), min_len)}-{max_len if hi == 'inf' else hi}"
