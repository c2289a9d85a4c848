"""Temperature sampling, curriculum and token-based batching of mt.data.sampler."""

from __future__ import annotations

import numpy as np
import pytest
from train_fixtures import make_corpus

from mt.common.errors import UserError
from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import load_direction
from mt.data.sampler import (
    Curriculum,
    MultilingualSampler,
    batch_by_size,
    shard_rows,
    stream_counts,
    temperature_probs,
)

PAIRS = (("deu_Latn", "eng_Latn"), ("eng_Latn", "fra_Latn"))
DIRS = ["eng_Latn-deu_Latn", "deu_Latn-eng_Latn", "eng_Latn-fra_Latn"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampler")
    return make_corpus(root, PAIRS, sizes={"deu_Latn-eng_Latn": 300, "eng_Latn-fra_Latn": 30}, max_len=9)


def _sampler(data, **kw):
    d = Dictionary.load(data / "dict.txt")
    sets = [load_direction(data, "train", x, d, d.langs()) for x in DIRS]
    keep = [s.keep_indices(10_000, 10_000) for s in sets]
    args = dict(temperature=1.0, max_tokens=64, seed=3)
    args.update(kw)
    return MultilingualSampler(sets, keep, **args)


def test_temperature_probabilities():
    sizes = [1000, 100, 10]
    assert np.allclose(temperature_probs(sizes, 1.0), np.array(sizes) / 1110)
    t = 2.0
    w = np.sqrt(np.array(sizes, dtype=float))
    assert np.allclose(temperature_probs(sizes, t), w / w.sum())
    p_hot = temperature_probs(sizes, 1e6)
    assert np.allclose(p_hot, 1 / 3, atol=1e-4)
    assert temperature_probs([5, 0], 1.5)[1] == 0.0
    # huge counts do not overflow
    assert np.isclose(temperature_probs([10**12, 10**12], 0.01).sum(), 1.0)
    with pytest.raises(UserError):
        temperature_probs([1, 2], 0.0)


def test_stream_counts_sum_exactly_stay_near_quota_and_never_decrease():
    for sizes, t in (([7, 3, 1], 1.3), ([100_000, 30, 30, 30, 30], 1.0), ([5, 0, 5, 1, 2, 900, 40], 2.0)):
        p = temperature_probs(sizes, t)
        prev = np.zeros(len(p), dtype=np.int64)
        for total in [*range(0, 300), 997, 10_000, 123_457, 10**9 + 7]:
            c = stream_counts(p, total)
            assert c.sum() == total and (c[p == 0] == 0).all()
            assert (np.abs(c - p * total) <= (1 + p * (len(p) - 2)) / 2 + 1e-9).all(), (sizes, total, c)
            if total < 300:
                assert (c >= prev).all(), (sizes, total)  # a longer draw never takes a sentence back
                prev = c


class _Sizes:
    """A direction of n one-token sentences: what the sampler reads of a dataset."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.src_sizes, self.tgt_sizes = name, np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64)


def test_virtual_epochs_carry_the_rounding_so_small_directions_get_their_share():
    """Issue 16: one pair of 100,000 and four of 30 sentences, T=1, --virtual-epoch-size 1000: each small
    direction is due 0.3 sentences per epoch; rounding every epoch alike gave them 0 over 50 epochs."""
    sizes = [100_000, 30, 30, 30, 30]
    sets = [_Sizes(f"d{i}", n) for i, n in enumerate(sizes)]
    s = MultilingualSampler(sets, [np.arange(n) for n in sizes], 1.0, 4096, seed=1, virtual_epoch_size=1000)
    got = np.zeros(len(sizes), dtype=np.int64)
    plans = {}
    for epoch in range(1, 51):
        plans[epoch] = plan = s.plan(epoch, start_update=epoch * 7, n_samples=1000)
        rows = np.concatenate(plan)
        assert len(rows) == 1000
        got += np.bincount(rows[:, 0], minlength=len(sizes))
    expected = 50 * 1000 * np.array(sizes) / sum(sizes)  # 14.98 each for the small ones
    assert (np.abs(got[1:] - expected[1:]) <= 1).all(), (got, expected)
    assert got.sum() == 50_000
    # resuming at epoch k (a fresh process: a new sampler) plans exactly the same batches
    fresh = MultilingualSampler(sets, [np.arange(n) for n in sizes], 1.0, 4096, seed=1, virtual_epoch_size=1000)
    for k in (1, 17, 50):
        again = fresh.plan(k, start_update=k * 7, n_samples=1000)
        assert len(again) == len(plans[k]) and all(np.array_equal(a, b) for a, b in zip(again, plans[k]))
    # a mid-epoch re-plan (curriculum) draws the epoch's last n sentences of the same stretch
    assert (s.counts(5, 35, 400) <= s.counts(5, 35, 1000)).all() and s.counts(5, 35, 400).sum() == 400


def test_epoch_counts_follow_temperature(data):
    s = _sampler(data, temperature=3.0)
    plan = s.plan(epoch=1, start_update=0, n_samples=3000)
    rows = np.concatenate(plan)
    counts = np.bincount(rows[:, 0], minlength=3)
    expected = temperature_probs([300, 300, 30], 3.0) * 3000
    assert counts.sum() == 3000
    assert np.abs(counts - expected).max() <= 1
    # a direction drawn 3000*p > its 30 sentences cycles through all of them evenly
    fra = rows[rows[:, 0] == 2, 1]
    per_sentence = np.bincount(fra, minlength=30)
    assert per_sentence.max() - per_sentence.min() <= 1


def test_plan_is_deterministic_and_changes_per_epoch(data):
    s = _sampler(data)
    a = s.plan(1, 0, 500)
    b = _sampler(data).plan(1, 0, 500)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    c = s.plan(2, 0, 500)
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))


def test_batches_respect_max_tokens(data):
    s = _sampler(data, max_tokens=40)
    plan = s.plan(1, 0, 630)
    assert sum(len(b) for b in plan) == 630
    for rows in plan:
        batch = s.collate(rows)
        padded = max(batch.src_tokens.numel(), batch.target.numel())
        assert padded <= 40, (batch.src_tokens.shape, batch.target.shape)
    # greedy packing: batches are not trivially small
    assert np.mean([len(b) for b in plan]) > 2


def test_batch_by_size_max_sentences_and_errors():
    src = np.array([3, 3, 3, 3, 3])
    tgt = np.array([2, 2, 2, 2, 9])
    batches = batch_by_size(src, tgt, max_tokens=100, max_sentences=2)
    assert [len(b) for b in batches] == [2, 2, 1]
    with pytest.raises(UserError, match="max-tokens"):
        batch_by_size(np.array([50]), np.array([2]), max_tokens=10)


def test_too_long_sentences_are_skipped_and_counted(data):
    d = Dictionary.load(data / "dict.txt")
    ds = load_direction(data, "train", "eng_Latn-deu_Latn", d, d.langs())
    keep = ds.keep_indices(max_source=6, max_target=6)
    too_long = (ds.src_sizes > 6) | (ds.tgt_sizes > 6)
    assert 0 < too_long.sum() < len(ds)
    assert len(keep) == len(ds) - too_long.sum()
    assert (ds.src_sizes[keep] <= 6).all() and (ds.tgt_sizes[keep] <= 6).all()


def test_reverse_pair_name_and_language_tokens(data):
    d = Dictionary.load(data / "dict.txt")
    fwd = load_direction(data, "train", "deu_Latn-eng_Latn", d, d.langs())
    rev = load_direction(data, "train", "eng_Latn-deu_Latn", d, d.langs())
    assert np.array_equal(fwd.item(0)[0], rev.item(0)[1])
    s = _sampler(data)
    batch = s.collate(np.array([[0, 0]]))  # direction 0 = eng->deu, sentence 0
    src, tgt = rev.item(0)
    assert batch.src_tokens[0].tolist() == [d.index("__eng_Latn__"), *src.tolist()]
    assert batch.prev_output_tokens[0].tolist() == [d.index("__deu_Latn__"), *tgt[:-1].tolist()]
    assert batch.target[0].tolist() == tgt.tolist() and tgt[-1] == d.eos()
    assert batch.src_lang.tolist() == [d.langs().index("eng_Latn")]
    assert batch.tgt_lang.tolist() == [d.langs().index("deu_Latn")]


def test_missing_direction_is_a_clear_error(data):
    d = Dictionary.load(data / "dict.txt")
    with pytest.raises(UserError, match="no binarized train data for deu_Latn-fra_Latn"):
        load_direction(data, "train", "deu_Latn-fra_Latn", d, d.langs())


def test_curriculum_activation(data, tmp_path):
    f = tmp_path / "curr.tsv"
    f.write_text("# phase 2\neng_Latn-fra_Latn\t100\n\n", encoding="utf-8")
    cur = Curriculum.load(f, DIRS)
    s = _sampler(data, curriculum=cur, temperature=1.0)
    assert s.active(0) == (0, 1) and s.active(99) == (0, 1) and s.active(100) == (0, 1, 2)
    p0, p1 = s.probabilities(0), s.probabilities(100)
    assert p0[2] == 0 and np.isclose(p0[:2].sum(), 1)
    assert np.allclose(p1, np.array([300, 300, 30]) / 630)
    assert s.epoch_size(0) == 600 and s.epoch_size(100) == 630
    before = np.concatenate(s.plan(1, 0, 600))
    after = np.concatenate(s.plan(1, 100, 630))
    assert not (before[:, 0] == 2).any()
    assert (after[:, 0] == 2).sum() == 30


@pytest.mark.parametrize(
    "text, match",
    [
        ("eng_Latn-fra_Latn 10 extra\n", "expected 'pair<TAB>start_update'"),
        ("eng_Latn-xxx 10\n", "unknown language code"),
        ("fra_Latn-eng_Latn 10\n", "not in --lang-pairs"),
        ("eng_Latn-fra_Latn ten\n", "not an integer"),
        ("eng_Latn-fra_Latn 1\neng_Latn-fra_Latn 2\n", "listed twice"),
    ],
)
def test_curriculum_file_errors_name_the_line(tmp_path, text, match):
    f = tmp_path / "c.tsv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=match) as e:
        Curriculum.load(f, DIRS)
    assert str(f) in str(e.value)


def test_curriculum_must_leave_a_pair_at_start(data):
    with pytest.raises(UserError, match="no pair active at update 0"):
        _sampler(data, curriculum=Curriculum({d: 5 for d in DIRS}))


def test_shards_cover_the_batch():
    rows = np.arange(14).reshape(7, 2)
    parts = [shard_rows(rows, r, 3) for r in range(3)]
    assert sorted(np.concatenate(parts)[:, 0].tolist()) == rows[:, 0].tolist()
    assert [len(p) for p in parts] == [3, 2, 2]


@pytest.mark.parametrize("multiple", [8, 64])
def test_padded_lengths_give_the_same_losses_and_gradients(data, multiple):
    """--required-seq-len-multiple: lengths become multiples, and the MoE model's loss, balance loss and every
    gradient are those of the unpadded batch (padding is masked in attention, routing and the loss). Same seed
    before each pass: the second-expert sampling draws one number per routed (non-padding) token either way."""
    import torch

    from mt.models.config import ForwardContext, arch_config
    from mt.models.transformer import Transformer
    from mt.train.criterion import LabelSmoothedCrossEntropy

    plain = _sampler(data)
    padded = _sampler(data, seq_len_multiple=multiple)
    rows = plain.plan(1, 0, 40)[0]
    a, b = plain.collate(rows), padded.collate(rows)
    assert b.src_tokens.size(1) % multiple == 0 and b.prev_output_tokens.size(1) % multiple == 0
    assert b.src_tokens.size(1) > a.src_tokens.size(1) and a.ntokens == b.ntokens

    d = Dictionary.load(data / "dict.txt")
    cfg = arch_config(
        "transformer_tiny", vocab_size=len(d), dropout=0.0, moe_freq=2, moe_expert_count=4, langs=d.langs()
    ).validate()
    torch.manual_seed(0)
    model = Transformer(cfg)
    crit = LabelSmoothedCrossEntropy(0.1, {"moe_balance": 0.01})
    results = []
    for batch in (a, b):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        ctx = ForwardContext(src_lang=batch.src_lang, tgt_lang=batch.tgt_lang)
        mask = batch.target.ne(d.pad())
        hidden = model(batch.src_tokens, batch.prev_output_tokens, ctx, target_mask=mask, features_only=True)
        out = crit(hidden, model.output_weight, batch.target[mask], ctx.aux_losses)
        (out.loss + out.aux_total).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(out.loss.detach()), {k: float(v.detach()) for k, v in out.aux.items()}, grads))
    (la, aux_a, ga), (lb, aux_b, gb) = results
    assert aux_a and aux_a.keys() == aux_b.keys()
    assert lb == pytest.approx(la, rel=1e-5)
    assert aux_b == pytest.approx(aux_a, rel=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-4, atol=1e-6, msg=n)
