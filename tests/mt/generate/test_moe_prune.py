"""mt-moe-prune (language-specific expert pruning, Koishekenov et al. 2023): from mt-moe-stats counts, keep
N experts per MoE layer and write a smaller checkpoint that decodes without an expert cache. The pruned
model computes exactly what the full model computes with the removed experts' gate logits at -inf."""

from __future__ import annotations

import json

import hostile
import pytest
import torch
from decode_fixtures import make_checkpoint
from train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

from mt.formats import checkpoint as ckpt
from mt.generate import moe_prune
from mt.generate.cli import moe_prune_main, moe_stats_main
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator
from mt.models.moe import layers as moe_mod  # top2_route patched where MoELayer calls it

E = 8
SOURCES = [[5 + (i * 7 + j * 3) % 40 for j in range(2 + i % 7)] for i in range(12)]


@pytest.fixture(autouse=True)
def prune_cli(monkeypatch):
    """``hostile.assert_refused`` finds console scripts by name; mt-moe-prune is not installed in the shared
    venv yet."""
    orig = hostile.cli
    monkeypatch.setattr(hostile, "cli", lambda name: moe_prune_main if name == "mt-moe-prune" else orig(name))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random MoE checkpoint (every 2nd layer sparse, 8 experts, the second expert always kept) and the
    routing statistics of translating a text eng->deu with it."""
    root = tmp_path_factory.mktemp("prune")
    path, data = make_checkpoint(
        root,
        moe_freq=2,
        moe_expert_count=E,
        moe_second_expert_policy="all",
        moe_eom=0.1,
        encoder_layers=2,
        decoder_layers=2,
    )
    text = root / "dev.eng"
    text.write_text("the cat sees the dog\na small house\nthe red bird sings under the tree\n", encoding="utf-8")
    stats = root / "stats.json"
    assert (
        moe_stats_main(
            [
                "--path",
                str(path),
                "--input",
                str(text),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--out",
                str(stats),
                "--beam",
                "2",
                "--no-progress-bar",
                "--cpu",
            ]
        )
        == 0
    )
    return path, data, stats


def _masked_reference(tr: Translator, kept: dict[str, list[int]]):
    """The full model with the removed experts' gate logits at -inf (what pruning should compute)."""
    orig = moe_mod.top2_route
    current = {}

    def route(logits, *a, **k):
        mask = torch.full((logits.size(1),), float("-inf"))
        mask[kept[current["tag"]]] = 0.0
        return orig(logits + mask, *a, **k)

    hooks = [
        m.register_forward_pre_hook(lambda m, a: current.__setitem__("tag", m.tag))
        for m in moe_mod.moe_layers(tr.model)
    ]
    moe_mod.top2_route = route
    try:
        return tr.translate_ids(SOURCES, "eng_Latn", "deu_Latn", SearchConfig(beam=3))
    finally:
        moe_mod.top2_route = orig
        for h in hooks:
            h.remove()


def test_pruned_model_is_the_full_model_with_removed_experts_masked(model, tmp_path):
    path, _, stats = model
    out = tmp_path / "pruned"
    assert moe_prune_main(["--path", str(path), "--stats", str(stats), "--keep-experts", "3", "--out", str(out)]) == 0
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    kept = state["pruned"]["experts"]
    assert state["model_config"]["moe_expert_count"] == 3 and list(kept) == ["enc1", "dec1"]
    counts = json.loads(stats.read_text())["layers"]
    for tag, ids in kept.items():  # the three experts the statistics count most
        a = counts[tag]["assignments"]
        assert len(ids) == 3 and min(a[e] for e in ids) >= max(a[e] for e in range(E) if e not in ids)
    full = ckpt.load_checkpoint(path)["model"]
    for tag, prefix in (("enc1", "encoder.layers.1.ffn."), ("dec1", "decoder.layers.1.ffn.")):
        idx = torch.tensor(kept[tag])
        assert torch.equal(state["model"][prefix + "wg.weight"], full[prefix + "wg.weight"][idx])
        assert torch.equal(state["model"][prefix + "experts.fc2_weight"], full[prefix + "experts.fc2_weight"][idx])
    assert (
        len(list(out.glob("checkpoint-rank-*.pt"))) == 3
        and (out / "dict.txt").is_file()
        and (out / "spm.model").is_file()
    )
    pruned = Translator(out / "checkpoint.pt")
    got = pruned.translate_ids(SOURCES, "eng_Latn", "deu_Latn", SearchConfig(beam=3))
    want = _masked_reference(Translator(path), kept)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
    assert all(abs(a[0].score - b[0].score) < 1e-5 for a, b in zip(got, want))
    unpruned = Translator(path).translate_ids(SOURCES, "eng_Latn", "deu_Latn", SearchConfig(beam=3))
    assert [h[0].tokens for h in got] != [h[0].tokens for h in unpruned]  # the masking mattered


def test_keeping_every_expert_changes_nothing_and_pruned_models_can_be_pruned_again(model, tmp_path):
    path, _, stats = model
    assert (
        moe_prune_main(
            ["--path", str(path), "--stats", str(stats), "--keep-share", "1", "--out", str(tmp_path / "all")]
        )
        == 0
    )
    a = Translator(path).translate_ids(SOURCES, "eng_Latn", "deu_Latn", SearchConfig(beam=2))
    b = Translator(tmp_path / "all" / "checkpoint.pt").translate_ids(
        SOURCES, "eng_Latn", "deu_Latn", SearchConfig(beam=2)
    )
    assert [h[0].tokens for h in a] == [h[0].tokens for h in b]
    # statistics of the pruned model, and pruning it again: 8 -> 4 experts (share 0.5 of 8)
    text = tmp_path / "dev.eng"
    text.write_text("the cat sees the dog\n", encoding="utf-8")
    assert (
        moe_stats_main(
            [
                "--path",
                str(tmp_path / "all" / "checkpoint.pt"),
                "--input",
                str(text),
                "-s",
                "eng_Latn",
                "-t",
                "deu_Latn",
                "--out",
                str(tmp_path / "s2.json"),
                "--no-progress-bar",
                "--cpu",
            ]
        )
        == 0
    )
    assert (
        moe_prune_main(
            [
                "--path",
                str(tmp_path / "all" / "checkpoint.pt"),
                "--stats",
                str(tmp_path / "s2.json"),
                "--keep-share",
                "0.5",
                "--importance",
                "first",
                "--out",
                str(tmp_path / "half"),
            ]
        )
        == 0
    )
    assert Translator(tmp_path / "half" / "checkpoint.pt").model.cfg.moe_expert_count == 4


def test_selection_ranks_by_counts_ties_to_the_lower_id():
    assert moe_prune.select([5, 9, 9, 0, 7], 3) == [1, 2, 4]
    assert moe_prune.select([1, 1, 1, 1], 2) == [0, 1]
    assert moe_prune.PruneConfig(stats=["x"], keep_share=0.25).kept(128) == 32
    assert moe_prune.PruneConfig(stats=["x"], keep_share=0.2).kept(8) == 2


@pytest.mark.parametrize(
    "extra,expect",
    [
        (["--keep-experts", "1"], "at least 2"),
        (["--keep-experts", "9"], "has 8 experts"),
        (["--keep-share", "1.5"], "(0, 1]"),
    ],
)
def test_refused_keep_values(model, tmp_path, extra, expect):
    path, _, stats = model
    out = tmp_path / "out"
    hostile.assert_refused(
        "mt-moe-prune", ["--path", path, "--stats", stats, *extra, "--out", out], tmp_path, outputs=[out], expect=expect
    )


def test_refused_statistics(model, tmp_path):
    path, _, stats = model
    data = json.loads(stats.read_text())
    bad = {
        "other.json": {**data, "num_experts": 16},
        "nolayer.json": {**data, "layers": {"enc1": data["layers"]["enc1"]}},
        "notstats.json": {"format": "x"},
    }
    expects = {"other.json": "16 experts", "nolayer.json": "dec1", "notstats.json": "format marker"}
    for name, content in bad.items():
        (tmp_path / name).write_text(json.dumps(content))
        hostile.assert_refused(
            "mt-moe-prune",
            ["--path", path, "--stats", tmp_path / name, "--keep-experts", "2", "--out", tmp_path / "out"],
            tmp_path,
            outputs=[tmp_path / "out"],
            expect=expects[name],
        )


def test_refused_outputs(model, tmp_path):
    path, data, stats = model
    hostile.assert_refused(
        "mt-moe-prune",
        ["--path", path, "--stats", stats, "--keep-experts", "2", "--out", data],
        tmp_path,
        expect="same file",
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"x")
    hostile.assert_refused(
        "mt-moe-prune",
        ["--path", path, "--stats", stats, "--keep-experts", "2", "--out", tmp_path / "out"],
        tmp_path,
        expect="--force",
    )
