"""UniMax and UtiliMax data mixing (mt.data.mixing) and mt-train --sampling-method."""

from __future__ import annotations

import numpy as np
import pytest
from hostile import assert_refused
from train_fixtures import make_corpus, one_thread  # noqa: F401 (autouse)

from mt.common.errors import UserError
from mt.data.mixing import Mixing, load_utilities, unimax_budgets, utilimax_shares
from mt.data.sampler import MultilingualSampler
from mt.formats.trainlog import TrainLog
from mt.train.cli import train_main as main

DIRS = ["eng_Latn-deu_Latn", "deu_Latn-eng_Latn", "eng_Latn-fra_Latn", "fra_Latn-eng_Latn"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLLB_MINI_HOME", str(tmp_path / "home" / "nllb-mini"))


def test_unimax_matches_a_hand_computed_example_with_redistribution():
    """Sizes 100 < 1,000 < 10,000 < 100,000 tokens, budget 40,000, at most 4 epochs. Smallest first:
    40000 / 4 = 10000 > 4 x 100, so 400 (capped); 39600 / 3 = 13200 > 4 x 1000, so 4000 (capped);
    the remaining 35600 splits evenly, 17800 each (1.78 and 0.178 epochs). Input order does not matter."""
    assert unimax_budgets([100, 1000, 10_000, 100_000], 40_000, 4) == pytest.approx([400, 4000, 17_800, 17_800])
    assert unimax_budgets([100_000, 100, 10_000, 1000], 40_000, 4) == pytest.approx([17_800, 400, 17_800, 4000])
    # N = 1: 100 and 1000 capped, (40000 - 1100) / 2 = 19450 > 10000 capped too -> 28900 to the largest
    assert unimax_budgets([100, 1000, 10_000, 100_000], 40_000, 1) == pytest.approx([100, 1000, 10_000, 28_900])
    # a budget nothing caps: uniform; empty directions get nothing
    assert unimax_budgets([500, 600, 0], 900, 4) == pytest.approx([450, 450, 0])
    # N epochs of everything is less than the budget: all capped, the rest unassigned
    assert unimax_budgets([10, 20], 1000, 2) == pytest.approx([20, 40])
    with pytest.raises(UserError, match="unimax-max-epochs"):
        unimax_budgets([1, 2], 10, 0)


def _objective(w, z, scale):
    return z @ w - scale / 2 * (w @ w)


def test_utilimax_returns_the_closed_form_optimum_and_respects_the_caps():
    # no cap binds: w_i = (1 + (z_i - mean z) / λ) / k with z = (u - mean u) / (max u - min u)
    u = np.array([1.0, 2.0, 4.0])
    z = (u - u.mean()) / 3.0
    for lam in (1.0, 2.5):
        assert utilimax_shares(u, [1, 1, 1], lam) == pytest.approx((1 + z / lam) / 3, abs=1e-12)
    # the best direction capped at 0.3: ν solves (z1 - ν)/3 + (z2 - ν)/3 = 0.7 -> ν = (z1 + z2 - 2.1) / 2
    nu = (z[0] + z[1] - 2.1) / 2
    expected = [(z[0] - nu) / 3, (z[1] - nu) / 3, 0.3]
    w = utilimax_shares(u, [1, 1, 0.3], 1.0)
    assert w == pytest.approx(expected, abs=1e-12) and w.sum() == pytest.approx(1.0)
    # a low utility driven to 0 (the non-negativity bound), the others share by the same formula
    u = np.array([0.0, 10.0, 10.0])
    assert utilimax_shares(u, [1, 1, 1], 0.2) == pytest.approx([0, 0.5, 0.5], abs=1e-12)
    # the utilities' unit does not matter; equal utilities give UniMax's shares under the same caps
    assert utilimax_shares(100 * np.array([1.0, 2, 4]), [1, 1, 1], 1.0) == pytest.approx((1 + z / 1.0) / 3)
    sizes, budget, n_epochs = np.array([100.0, 1000, 10_000, 100_000]), 40_000, 4
    b = unimax_budgets(sizes, budget, n_epochs)
    assert utilimax_shares(np.zeros(4), n_epochs * sizes / budget, 1.0) == pytest.approx(b / b.sum(), abs=1e-12)
    # random problems: feasible, within the caps, and no worse than scipy's general-purpose solver
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 7))
        u, caps, lam = rng.normal(size=k), rng.uniform(0.05, 0.8, size=k), float(rng.uniform(0.2, 3))
        if caps.sum() <= 1:
            caps *= 1.5 / caps.sum()
        w = utilimax_shares(u, caps, lam)
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all() and (w <= caps + 1e-12).all()
        zz, scale = (u - u.mean()) / (u.max() - u.min()), lam * k
        ref = minimize(
            lambda x: -_objective(x, zz, scale),
            np.full(k, 1 / k),
            method="SLSQP",
            bounds=list(zip(np.zeros(k), caps)),
            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert _objective(w, zz, scale) >= _objective(ref.x, zz, scale) - 1e-9
    # infeasible caps (the budget is more than N epochs of everything): all at their caps, scaled alike
    assert utilimax_shares([0, 5], [0.2, 0.3], 1.0) == pytest.approx([0.4, 0.6])


def _mix(method, budget=3000.0, unit="tokens", **kw):
    # sentences 10 / 100 / 1000 of mean length 10 / 20 / 5 tokens
    return Mixing(
        method, ["a-b", "b-a", "c-d"], np.array([10, 100, 1000]), np.array([100, 2000, 5000]), budget, unit, **kw
    )


def test_shares_become_sentence_probabilities_and_epochs():
    m = _mix("unimax", max_epochs=2.0)
    # tokens: 200 (capped) | (3000 - 200) / 2 = 1400 each -> sentences 20, 70, 280
    assert m.shares([0, 1, 2]) * 3000 == pytest.approx([200, 1400, 1400])
    assert m.probs([0, 1, 2]) == pytest.approx(np.array([20, 70, 280]) / 370)
    assert m.epochs([0, 1, 2]) == pytest.approx([2.0, 0.7, 0.28])
    assert not m.over_budget([0, 1, 2]) and _mix("unimax", budget=1e6).over_budget([0, 1, 2])
    # temperature keeps p ∝ n^(1/T) over sentences; epochs follow from the tokens the budget buys
    t = _mix("temperature", temperature=1.0)
    assert t.probs([0, 1, 2]) == pytest.approx(np.array([10, 100, 1000]) / 1110)
    assert t.epochs([0, 1, 2]) == pytest.approx([3000 / 7100] * 3)  # T=1: every direction alike
    # a sentence budget (--max-epoch) works in sentences throughout
    s = _mix("unimax", budget=330.0, unit="sentences", max_epochs=1.0)
    assert s.probs([0, 1, 2]) * 330 == pytest.approx([10, 100, 220])
    u = _mix("utilimax", max_epochs=100.0, utilities=np.array([0.0, 0.0, 1.0]))
    w = u.shares([0, 1, 2])
    assert w[2] > w[0] == pytest.approx(w[1])


class _Sizes:
    def __init__(self, name: str, n: int, length: int) -> None:
        self.name = name
        self.src_sizes = self.tgt_sizes = np.full(n, length, dtype=np.int64)


def test_every_method_keeps_the_share_of_a_direction_due_less_than_one_sentence_per_epoch():
    """UniMax gives the 30-sentence directions 0.35 sentences per 1000-sentence epoch: over 40 epochs the
    endless draw (stream_counts) still hands each of them its 14, as for temperature sampling."""
    sizes = [100_000, 30, 30]
    sets = [_Sizes(f"d{i}", n, 4) for i, n in enumerate(sizes)]
    mix = Mixing(
        "unimax", [s.name for s in sets], np.array(sizes), 4 * np.array(sizes), 4 * 40_000.0, "tokens", max_epochs=0.47
    )
    s = MultilingualSampler(sets, [np.arange(n) for n in sizes], 1.0, 4096, seed=1, virtual_epoch_size=1000, mixing=mix)
    p = s.probabilities(0)
    assert p[1] * 1000 < 1 and p == pytest.approx(mix.probs([0, 1, 2]))
    got = sum(np.bincount(np.concatenate(s.plan(e, 0, 1000))[:, 0], minlength=3) for e in range(1, 41))
    assert got.sum() == 40_000 and (np.abs(got - p * 40_000) <= 1).all(), got


def test_utilities_from_a_file_or_inline(tmp_path):
    f = tmp_path / "u.tsv"
    f.write_text("# direction<TAB>utility<TAB>std\neng_Latn-deu_Latn\t1.5\t0.2\n\nfra_Latn-eng_Latn\t-0.5\n")
    assert load_utilities(str(f), DIRS) == pytest.approx([1.5, 0, 0, -0.5])
    assert load_utilities("eng_Latn-fra_Latn=2, deu_Latn-eng_Latn=1", DIRS) == pytest.approx([0, 1, 2, 0])
    f.write_text("eng_Latn-deu_Latn\t1\nxho_Latn-eng_Latn\t2\n")
    with pytest.raises(UserError, match=r"u\.tsv:2: xho_Latn-eng_Latn is not in --lang-pairs"):
        load_utilities(str(f), DIRS)
    f.write_text("eng_Latn-deu_Latn\tlots\n")
    with pytest.raises(UserError, match=r"u\.tsv:1: utility 'lots'"):
        load_utilities(str(f), DIRS)
    with pytest.raises(UserError, match="listed twice"):
        load_utilities("eng_Latn-fra_Latn=2,eng_Latn-fra_Latn=1", DIRS)
    with pytest.raises(UserError, match="finite"):
        load_utilities("eng_Latn-fra_Latn=nan", DIRS)
    with pytest.raises(UserError, match="no such file"):
        load_utilities(str(tmp_path / "missing.tsv"), DIRS)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixing")
    pairs = (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn"))
    return make_corpus(root, pairs, sizes={"deu_Latn-eng_Latn": 120, "eng_Latn-fra_Latn": 6}, n_valid=2, max_len=8)


def _args(data, save, *extra):
    return [
        str(data),
        "--lang-pairs",
        ",".join(DIRS),
        "--arch",
        "transformer_tiny",
        "--save-dir",
        str(save),
        "--max-tokens",
        "128",
        "--max-update",
        "12",
        "--log-interval",
        "4",
        "--no-progress-bar",
        "--seed",
        "3",
        *extra,
    ]


def test_mt_train_prints_and_logs_the_mix_and_the_epochs_seen(data, tmp_path, capsys):
    assert main(_args(data, tmp_path / "u", "--sampling-method", "unimax", "--unimax-max-epochs", "2")) == 0
    err = capsys.readouterr().err
    assert "sampling: UniMax, at most 2 epochs per direction; budget" in err
    assert "eng_Latn-fra_Latn" in err and " epochs" in err
    recs = TrainLog(tmp_path / "u" / "train_log.jsonl").read()
    mix = next(r for r in recs if r["type"] == "mixing")
    planned = {d: v["epochs"] for d, v in mix["directions"].items()}
    assert planned["eng_Latn-fra_Latn"] == pytest.approx(2.0) and planned["eng_Latn-deu_Latn"] < 2.0
    assert sum(v["p"] for v in mix["directions"].values()) == pytest.approx(1.0)
    seen = next(r for r in recs if r["type"] == "mixing_seen")
    assert seen["update"] == 12 and sum(seen["sentences"].values()) > 0
    # the small pair's 6 sentences are repeated at most N=2 times (up to one sentence of rounding and
    # the fuller-than-measured last batches)
    assert seen["sentences"]["eng_Latn-fra_Latn"] <= 2 * 6 + 1
    # utilimax up-weights the pairs given a utility (inline, as recipes/ablations.sh does)
    extra = ["--sampling-method", "utilimax", "--unimax-max-epochs", "50", "--utilities", "eng_Latn-deu_Latn=1"]
    assert main(_args(data, tmp_path / "x", *extra)) == 0
    p = next(r for r in TrainLog(tmp_path / "x" / "train_log.jsonl").read() if r["type"] == "mixing")["directions"]
    assert p["eng_Latn-deu_Latn"]["utility"] == 1.0 and p["eng_Latn-deu_Latn"]["p"] > p["deu_Latn-eng_Latn"]["p"]


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--sampling-method", "utilimax"], "needs --utilities"),
        (["--utilities", "eng_Latn-deu_Latn=1"], "only applies to --sampling-method utilimax"),
        (["--sampling-method", "unimax", "--unimax-max-epochs", "0"], "--unimax-max-epochs must be > 0"),
        (["--sampling-method", "unimax", "--max-update", "0"], "needs a training budget"),
        (["--sampling-method", "utilimax", "--utilities", "eng_Latn-xho_Latn=1"], "not in --lang-pairs"),
    ],
)
def test_mixing_flag_mistakes_are_one_line_errors(data, tmp_path, extra, expect):
    assert_refused("mt-train", _args(data, tmp_path / "ck", *extra), tmp_path, expect=expect)
