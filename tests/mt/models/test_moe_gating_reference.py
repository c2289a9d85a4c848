"""Top-2 gating against an independent reference written here from the GShard paper (Lepikhin et al. 2020,
Algorithm 1) and fairseq's ``top2gating`` (fairseq/modules/moe/top2gate.py), token by token in plain
Python and float64, without ``mt.models.moe.top2_route``:

- gate = softmax(logits); expert 1 = argmax; expert 2 = argmax of the logits with expert 1 masked out
  (plus Gumbel noise in training with the ``sampling`` policy); g1, g2 their gate probabilities;
- ``normalize_before_dropping``: g1, g2 divided by g1 + g2 before capacity (a kept expert keeps that
  weight even when the other one is dropped); otherwise renormalised over the experts a token kept;
- ``random`` policy (training): expert 2 kept with probability 2 * g2 (g2 after that normalisation when it
  comes first), decided before capacity, so a refused second choice takes no slot;
- capacity: every expert takes its first choices in token order, then its second choices in token order,
  up to ``capacity`` assignments; the rest are dropped;
- capacity rules: GShard / fairseq ``2 * ceil(S / E)`` with S the batch positions (padding included), the
  project's ``ceil(factor * 2 * N / E)`` with N the routed (non-padding) tokens, and ``ceil(fraction * N)``
  at evaluation with ``--moe-eval-capacity-token-fraction`` > 0.

The random policies are compared twice: with the same random draws (the test draws them from the same
seed, in the layout ``top2_route`` uses: one uniform (N, E) for Gumbel noise, one uniform (N,) for the
random keep), and by their distribution over many tokens, which does not depend on that layout.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
import torch
from train_fixtures import one_thread  # noqa: F401 (autouse)

from mt.models.config import ForwardContext, arch_config
from mt.models.moe import MoELayer, Routing, capacity_for, top2_route


# --- the reference -------------------------------------------------------------------------------
def ref_capacity(
    rule: str,
    tokens: int,
    positions: int,
    experts: int,
    training: bool,
    factor: float = 1.0,
    eval_fraction: float = 0.0,
) -> int:
    """Slots per expert. ``tokens``: routed (non-padding) tokens N; ``positions``: batch positions S >= N.

    Exact rational arithmetic: the factors used below are exact in binary, so this agrees with any float
    formula; ``rule`` is the training rule ("fairseq": GShard's 2 * ceil(S / E); "nonpad": the project's)."""
    if not training and eval_fraction > 0:
        return max(1, math.ceil(Fraction(eval_fraction) * tokens))
    if rule == "fairseq":
        return max(1, math.ceil(Fraction(factor) * 2 * math.ceil(Fraction(positions, experts))))
    if rule == "nonpad":
        return max(1, math.ceil(Fraction(factor) * 2 * tokens / experts))
    raise ValueError(rule)


@dataclass
class RefRouting:
    first: list[int]  # per token
    second: list[int | None]  # per token; None: refused by the random policy
    slots: dict[int, list[int]]  # expert -> tokens in slot order (kept assignments only)
    weight: dict[tuple[int, int], float]  # (token, expert) -> combine weight of a kept assignment
    routed: list[int]  # assignments per expert before capacity
    dropped: int


def ref_top2(
    logits: np.ndarray,
    capacity: int,
    policy: str = "all",
    normalize_before: bool = False,
    training: bool = False,
    gumbel: np.ndarray | None = None,
    keep_draw: np.ndarray | None = None,
) -> RefRouting:
    """Token-by-token top-2 routing (see the module docstring). ``gumbel`` (N, E): noise added to the logits
    for the second choice (training, ``sampling``); ``keep_draw`` (N,): uniforms for the ``random`` policy."""
    N, E = logits.shape
    first: list[int] = []
    second: list[int | None] = []
    gates: list[tuple[float, float]] = []
    for i in range(N):
        row = [float(v) for v in logits[i]]
        m = max(row)
        z = [math.exp(v - m) for v in row]
        p = [v / sum(z) for v in z]
        e1 = max(range(E), key=lambda e: p[e])
        noisy = [row[e] + (float(gumbel[i, e]) if training and policy == "sampling" else 0.0) for e in range(E)]
        e2 = max((e for e in range(E) if e != e1), key=lambda e: noisy[e])
        g1, g2 = p[e1], p[e2]
        if normalize_before:
            g1, g2 = g1 / (g1 + g2), g2 / (g1 + g2)
        if training and policy == "random" and not 2 * g2 > float(keep_draw[i]):
            e2 = None
        first.append(e1)
        second.append(e2)
        gates.append((g1, g2))
    queue: dict[int, list[tuple[int, int]]] = {e: [] for e in range(E)}  # expert -> (token, 0 first | 1 second)
    for i in range(N):
        queue[first[i]].append((i, 0))
    for i in range(N):
        if second[i] is not None:
            queue[second[i]].append((i, 1))
    kept = {e: q[:capacity] for e, q in queue.items()}
    weight: dict[tuple[int, int], float] = {}
    for e, q in kept.items():
        for i, which in q:
            weight[(i, e)] = gates[i][which]
    if not normalize_before:  # renormalise over what each token kept
        total = [0.0] * N
        for (i, _), w in weight.items():
            total[i] += w
        weight = {(i, e): w / total[i] for (i, e), w in weight.items()}
    return RefRouting(
        first,
        second,
        {e: [i for i, _ in q] for e, q in kept.items()},
        weight,
        [len(queue[e]) for e in range(E)],
        sum(max(0, len(q) - capacity) for q in queue.values()),
    )


def assert_same_routing(r: Routing, ref: RefRouting, capacity: int) -> None:
    E = len(ref.routed)
    assert r.capacity == capacity
    assert r.top1.tolist() == ref.first
    assert r.routed.tolist() == ref.routed and int(r.dropped) == ref.dropped
    expert = r.expert.tolist()
    assert expert == sorted(expert)  # grouped by expert ...
    for e in range(E):  # ... and within an expert in slot order: first choices, then second ones, token order
        assert r.token[r.expert == e].tolist() == ref.slots[e], e
    got = {(int(t), int(e)): float(w) for t, e, w in zip(r.token, r.expert, r.weight)}
    assert got.keys() == ref.weight.keys()
    for k, w in ref.weight.items():
        assert got[k] == pytest.approx(w, rel=1e-5, abs=1e-7), k


# --- random logits with binding capacity -----------------------------------------------------------
def _logits(seed: int, N: int, E: int) -> torch.Tensor:
    """Random gate logits skewed towards a few popular experts, so capacity binds."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, E, generator=g) * 1.5 + torch.randn(E, generator=g) * 2.0


CASES = [
    (seed, N, E, pad)
    for seed, (N, E, pad) in enumerate(
        [(1, 2, 0), (5, 2, 3), (7, 4, 1), (16, 4, 0), (33, 4, 15), (40, 8, 7), (64, 8, 0), (50, 16, 14), (97, 3, 2)]
    )
]


def _coverage(ref: RefRouting, capacity: int) -> set[str]:
    """Which capacity situations a case exercises (to show the cases below bind capacity every way)."""
    seen = set()
    for e in range(len(ref.routed)):
        firsts = ref.first.count(e)
        if firsts > capacity:
            seen.add("first choices over capacity")
        elif firsts < capacity < ref.routed[e]:
            seen.add("second choices partly kept")
        elif ref.routed[e] > capacity:
            seen.add("second choices all dropped")
    return seen


@pytest.mark.parametrize("normalize_before", [False, True])
def test_deterministic_top2_matches_the_reference_under_both_capacity_rules(normalize_before):
    seen: set[str] = set()
    dropped = 0
    for seed, N, E, pad in CASES:
        logits = _logits(seed, N, E)
        for rule in ("fairseq", "nonpad"):
            for factor in (0.5, 1.0, 1.25):
                cap = ref_capacity(rule, N, N + pad, E, True, factor)
                for training, policy in ((True, "all"), (False, "all"), (False, "sampling"), (False, "random")):
                    # sampling / random are training-only: at evaluation routing is "all", deterministic
                    r = top2_route(logits, cap, policy, normalize_before, training)
                    ref = ref_top2(logits.double().numpy(), cap, "all", normalize_before)
                    assert_same_routing(r, ref, cap)
                seen |= _coverage(ref, cap)
                dropped += ref.dropped
    assert seen == {"first choices over capacity", "second choices partly kept", "second choices all dropped"}
    assert dropped > 100


@pytest.mark.parametrize("normalize_before", [False, True])
@pytest.mark.parametrize("policy", ["sampling", "random"])
def test_random_second_expert_policies_match_the_reference_on_the_same_draws(policy, normalize_before):
    seen: set[str] = set()
    for seed, N, E, pad in CASES:
        logits = _logits(seed, N, E)
        cap = ref_capacity("fairseq", N, N + pad, E, True, 0.75)
        torch.manual_seed(1000 + seed)
        r = top2_route(logits, cap, policy, normalize_before, training=True)
        torch.manual_seed(1000 + seed)
        if policy == "sampling":  # Gumbel(0, 1) noise from uniforms: -log(-log u)
            u = torch.rand(N, E).double().clamp(1e-9, 1 - 1e-9).numpy()
            ref = ref_top2(logits.double().numpy(), cap, policy, normalize_before, True, gumbel=-np.log(-np.log(u)))
        else:
            ref = ref_top2(
                logits.double().numpy(), cap, policy, normalize_before, True, keep_draw=torch.rand(N).double().numpy()
            )
        assert_same_routing(r, ref, cap)
        seen |= _coverage(ref, cap)
    assert "second choices partly kept" in seen


def test_sampling_draws_the_second_expert_from_the_gate_distribution_of_the_others():
    """Gumbel-max on the logits: P(expert 2 = j) = p_j / (1 - p_1). Within 5 standard deviations."""
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    n = 8000
    torch.manual_seed(3)
    r = top2_route(row.expand(n, -1).clone(), capacity=2 * n, second_expert_policy="sampling", training=True)
    assert int(r.dropped) == 0 and r.top1.eq(0).all()
    seconds = (r.routed - torch.bincount(r.top1, minlength=5)).double()
    p = row.double().softmax(-1)
    expect = p / (1 - p[0])
    expect[0] = 0
    sd = (expect * (1 - expect) / n).sqrt()
    assert seconds[0] == 0
    assert ((seconds / n - expect).abs() <= 5 * sd + 1e-12).all(), (seconds / n, expect)


@pytest.mark.parametrize("normalize_before", [False, True])
def test_random_policy_keeps_the_second_expert_with_probability_twice_its_gate(normalize_before):
    """P(keep expert 2) = 2 * g2 with g2 the gate of expert 2 (divided by g1 + g2 when normalised first)."""
    # the other experts hold real mass, so normalising first changes the keep rate (2 g2 = 0.51 -> 0.85 in row 2)
    rows = torch.tensor([[2.0, 0.0, -0.5, -0.5], [1.0, 0.0, -0.2, -0.2], [0.3, 0.0, -0.2, -0.3]])
    n = 6000
    torch.manual_seed(4)
    r = top2_route(
        rows.repeat_interleave(n, 0),
        capacity=10**6,
        second_expert_policy="random",
        normalize_before_dropping=normalize_before,
        training=True,
    )
    assert int(r.dropped) == 0
    p = rows.double().softmax(-1)
    g2 = p[:, 1] / (p[:, 0] + p[:, 1]) if normalize_before else p[:, 1]
    seconds = r.token[r.expert == 1]  # expert 1 is every row's second choice
    for k in range(3):
        kept = int(((seconds >= k * n) & (seconds < (k + 1) * n)).sum()) / n
        expect = float(min(1.0, 2 * g2[k]))
        assert abs(kept - expect) <= 5 * math.sqrt(expect * (1 - expect) / n) + 1e-12, (k, kept, expect)
    # the kept ones take weight 1 - w1 for the first choice, the others route to expert 0 alone
    w = {(int(t), int(e)): float(v) for t, e, v in zip(r.token, r.expert, r.weight)}
    lone = [t for t in range(n) if (t, 1) not in w]
    assert lone and all(
        w[(t, 0)] == pytest.approx(float(p[0, 0] / (p[0, 0] + p[0, 1])) if normalize_before else 1.0) for t in lone[:50]
    )


# --- capacity numbers ------------------------------------------------------------------------------
GRID = [(N, E) for N in (1, 2, 3, 5, 7, 10, 17, 64, 100, 257) for E in (1, 2, 3, 4, 8, 16)]


def test_capacity_for_follows_the_project_rule_and_the_eval_fraction():
    for N, E in GRID:
        for factor in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
            assert capacity_for(N, E, True, factor, 1.0) == ref_capacity("nonpad", N, N, E, True, factor), (
                N,
                E,
                factor,
            )
            assert capacity_for(N, E, False, factor, -1) == ref_capacity("nonpad", N, N, E, False, factor, -1)
            assert capacity_for(N, E, False, factor, 0) == ref_capacity("nonpad", N, N, E, False, factor, 0)
        for fraction in (0.0625, 0.25, 0.5, 1.0, 2.0):
            assert capacity_for(N, E, False, 1.0, fraction) == ref_capacity("nonpad", N, N, E, False, 1.0, fraction)
    # the two training rules differ where S / E is fractional (or padding is counted): 2 * ceil(5 / 4) = 4,
    # ceil(2 * 5 / 4) = 3, so the reference really has two rules
    assert ref_capacity("fairseq", 5, 5, 4, True) == 4 and ref_capacity("nonpad", 5, 5, 4, True) == 3


@pytest.mark.skipif(
    "rule" not in inspect.signature(capacity_for).parameters,
    reason="capacity_for has no rule= parameter yet (--moe-train-capacity-rule)",
)
def test_capacity_for_fairseq_rule_counts_padding():
    for N, E in GRID:
        for pad in (0, 1, 9):
            for factor in (0.5, 1.0, 1.25):
                got = capacity_for(N, E, True, factor, 1.0, rule="fairseq", positions=N + pad)
                assert got == ref_capacity("fairseq", N, N + pad, E, True, factor), (N, E, pad, factor)


# --- the layer: which N it counts, eval fraction, static gating ----------------------------------
def _layer(**kw) -> MoELayer:
    cfg = arch_config(
        "transformer_tiny",
        vocab_size=40,
        dropout=0.0,
        activation_dropout=0.0,
        moe_freq=1,
        moe_expert_count=4,
        moe_second_expert_policy="all",
        langs=["aaa_Latn"],
        **kw,
    ).validate()
    torch.manual_seed(0)
    layer = MoELayer(cfg, 0, False)
    with torch.no_grad():  # skew the gate so that capacity binds
        layer.wg.weight.mul_(4.0)
        layer.wg.weight[0] += 0.3
    return layer


def _ref_output(layer: MoELayer, xs: torch.Tensor, ref: RefRouting) -> torch.Tensor:
    ex = layer.experts
    out = torch.zeros_like(xs, dtype=torch.float64)
    for (t, e), w in ref.weight.items():
        h = torch.relu(xs[t].double() @ ex.fc1_weight[e].double().t() + ex.fc1_bias[e].double())
        out[t] += w * (h @ ex.fc2_weight[e].double().t() + ex.fc2_bias[e].double())
    return out.float()


@pytest.mark.parametrize("normalize_before", [False, True])
def test_training_layer_counts_only_real_tokens_and_combines_the_reference_routing(normalize_before):
    layer = _layer(moe_train_capacity_factor=0.5, moe_normalize_gate_prob_before_dropping=normalize_before).train()
    x = torch.randn(3, 11, 64)
    pad = torch.zeros(3, 11, dtype=torch.bool)
    pad[1, 4:] = True
    pad[2, 7:] = True
    ctx = ForwardContext(src_pad_mask=pad)
    out = layer(x, ctx)
    xs = x[~pad]  # the routed rows, in token order
    N, E = xs.size(0), 4
    cap = ref_capacity("nonpad", N, x.shape[0] * x.shape[1], E, True, 0.5)
    ref = ref_top2((xs @ layer.wg.weight.t()).double().detach().numpy(), cap, "all", normalize_before)
    assert ref.dropped > 0
    dropped, total = ctx.stats["moe/enc0/dropped"]
    assert float(dropped) / float(total) == pytest.approx(ref.dropped / (2 * N))
    torch.testing.assert_close(out[~pad], _ref_output(layer, xs, ref), rtol=1e-4, atol=1e-5)
    assert torch.all(out[pad] == 0)


@pytest.mark.parametrize("fraction", [0.125, 0.25, 1.0])
def test_static_eval_gating_uses_the_token_fraction_and_dynamic_gating_drops_nothing(fraction):
    layer = _layer(moe_eval_capacity_token_fraction=fraction).eval()
    seen: list[Routing] = []
    layer.route_hook = lambda _layer, r: seen.append(r)
    x = torch.randn(2, 20, 64)
    xs = x.reshape(-1, 64)
    logits = (xs @ layer.wg.weight.t()).double().detach().numpy()
    for gating in ("static", "dynamic"):
        layer.gating = gating
        with torch.no_grad():
            out = layer(x, ForwardContext())
        cap = ref_capacity("nonpad", 40, 40, 4, False, 1.0, fraction) if gating == "static" else 40
        ref = ref_top2(logits, cap, "all")
        assert_same_routing(seen[-1], ref, cap)
        torch.testing.assert_close(out.reshape(-1, 64), _ref_output(layer, xs, ref), rtol=1e-4, atol=1e-5)
        if gating == "static" and fraction < 1:
            assert ref.dropped > 0
        if gating == "dynamic":
            assert ref.dropped == 0
