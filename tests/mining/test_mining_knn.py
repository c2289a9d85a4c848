"""FAISS index + k-NN stage: exactness against brute force, round trips, resumability, sharding, errors."""

import json
import os

import numpy as np
import pytest
from mining_helpers import clustered, write_emb

from mining.cli import index_main, knn_main
from mining.embedding_store import EmbeddingSet
from mining.index import IndexConfig, build_index, load_index, save_index, set_nprobe
from mining.knn import KnnConfig, KnnSet, MineKnnConfig, knn_files, knn_search, mine_knn
from mining.launcher import Launcher, LauncherConfig
from mining.margin import MarginConfig, mine
from mt.common.errors import UserError


def brute_topk(q, db, k):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    db = db / np.linalg.norm(db, axis=1, keepdims=True)
    s = q.astype(np.float64) @ db.T.astype(np.float64)
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(s, ids, axis=1)


@pytest.fixture
def sides(tmp_path):
    x = clustered(300, 32, seed=1)
    y = clustered(250, 32, seed=2)
    return (
        write_emb(tmp_path / "src", x, shard_rows=100),
        write_emb(tmp_path / "tgt", y, shard_rows=90),
        EmbeddingSet.open(tmp_path / "src").load(),
        EmbeddingSet.open(tmp_path / "tgt").load(),
    )


def test_flat_knn_matches_brute_force_both_ways(tmp_path, sides):
    src, tgt, x, y = sides
    out = mine_knn(
        MineKnnConfig(src_emb=str(src), tgt_emb=str(tgt), out_dir=str(tmp_path / "knn"), knn=KnnConfig(k=4)),
        progress=False,
    )
    for direction, (q, db) in {"src2tgt": (x, y), "tgt2src": (y, x)}.items():
        ks = KnnSet.open(out[direction])
        assert len(ks) == q.shape[0] and ks.k == 4 and len(ks.meta["shards"]) == 3
        ids = np.concatenate([i for _, i, _ in ks.shards()])
        sims = np.concatenate([s for _, _, s in ks.shards()])
        want_ids, want_sims = brute_topk(q, db, 4)
        assert (ids[:, 0] == want_ids[:, 0]).mean() > 0.99  # fp32 vs fp64 ties aside
        np.testing.assert_allclose(sims, want_sims, atol=1e-5)
        np.testing.assert_allclose(ks.averages(), want_sims.mean(axis=1), atol=1e-5)
        np.testing.assert_allclose(ks.averages(2), want_sims[:, :2].mean(axis=1), atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,PQ8x4"])
def test_index_roundtrip_gives_same_results(tmp_path, sides, factory):
    src, tgt, x, y = sides
    index = build_index(EmbeddingSet.open(tgt), IndexConfig(factory=factory, train_sample=250), progress=False)
    assert index.ntotal == 250
    path = save_index(index, tmp_path / "idx" / "tgt.faiss")
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    again = load_index(path, nprobe=4)
    set_nprobe(index, 4)  # a no-op for Flat
    d1, i1 = index.search(x[:50], 4)
    d2, i2 = again.search(x[:50], 4)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


def test_ivf_with_all_lists_probed_is_exact(tmp_path, sides):
    src, tgt, x, y = sides
    flat = save_index(build_index(EmbeddingSet.open(tgt), IndexConfig("Flat"), progress=False), tmp_path / "f.faiss")
    ivf = save_index(
        build_index(EmbeddingSet.open(tgt), IndexConfig("IVF8,Flat", train_sample=250), progress=False),
        tmp_path / "i.faiss",
    )
    knn_search(flat, src, tmp_path / "flat", KnnConfig(k=4), progress=False)
    knn_search(ivf, src, tmp_path / "ivf", KnnConfig(k=4, nprobe=8), progress=False)
    a, b = KnnSet.open(tmp_path / "flat"), KnnSet.open(tmp_path / "ivf")
    for (_, ia, sa), (_, ib, sb) in zip(a.shards(), b.shards()):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, atol=1e-6)
    # with one list probed, IVF misses neighbours (recall < 1): the flag really reaches the index
    knn_search(ivf, src, tmp_path / "ivf1", KnnConfig(k=4, nprobe=1), progress=False)
    c = KnnSet.open(tmp_path / "ivf1")
    ia = np.concatenate([i for _, i, _ in a.shards()])
    ic = np.concatenate([i for _, i, _ in c.shards()])
    assert (ia != ic).any()


def test_finished_shards_are_skipped_and_missing_ones_redone(tmp_path, sides):
    src, tgt, x, y = sides
    index = save_index(build_index(EmbeddingSet.open(tgt), progress=False), tmp_path / "t.faiss")
    knn_search(index, src, tmp_path / "r", KnnConfig(k=3), progress=False)
    first = [np.load(p) for p in knn_files(tmp_path / "r", 1)]
    mtime0 = os.stat(knn_files(tmp_path / "r", 0)[0]).st_mtime_ns
    for p in knn_files(tmp_path / "r", 1):
        p.unlink()
    os.unlink(tmp_path / "r.meta.json")
    with pytest.raises(UserError, match="k-NN result not found"):
        KnnSet.open(tmp_path / "r")
    knn_search(index, src, tmp_path / "r", KnnConfig(k=3), progress=False)
    assert os.stat(knn_files(tmp_path / "r", 0)[0]).st_mtime_ns == mtime0  # not recomputed
    for a, p in zip(first, knn_files(tmp_path / "r", 1)):
        np.testing.assert_array_equal(a, np.load(p))


def _mine_all(tmp_path, name, x, y, shard_rows, launcher):
    s = write_emb(tmp_path / f"{name}_src", x, shard_rows=shard_rows)
    t = write_emb(tmp_path / f"{name}_tgt", y, shard_rows=shard_rows)
    out = mine_knn(
        MineKnnConfig(src_emb=str(s), tgt_emb=str(t), out_dir=str(tmp_path / name), knn=KnnConfig(k=4, batch_size=37)),
        launcher=launcher,
        progress=False,
    )
    fwd, bwd = KnnSet.open(out["src2tgt"]), KnnSet.open(out["tgt2src"])
    arrays = [np.concatenate([a for _, a, _ in ks.shards()]) for ks in (fwd, bwd)]
    arrays += [np.concatenate([b for _, _, b in ks.shards()]) for ks in (fwd, bwd)]
    return arrays, mine(fwd, bwd, MarginConfig(mode="max", threshold=0.0))


def test_sharded_local_pool_equals_one_shot(tmp_path):
    rng = np.random.default_rng(5)
    x = clustered(240, 24, seed=3)
    y = np.concatenate([x[:120] + 0.05 * rng.standard_normal((120, 24)), clustered(100, 24, seed=4)]).astype(np.float32)
    one, al1 = _mine_all(tmp_path, "one", x, y, None, None)
    many, al2 = _mine_all(tmp_path, "many", x, y, 50, Launcher(LauncherConfig(launcher="local", jobs=2)))
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(al1.src, al2.src)
    np.testing.assert_array_equal(al1.tgt, al2.tgt)
    np.testing.assert_array_equal(al1.scores, al2.scores)
    assert len(al1) >= 110  # the planted pairs are found


def test_submitit_debug_backend_runs_the_jobs(tmp_path):
    pytest.importorskip("submitit")
    x, y = clustered(90, 16, seed=7), clustered(80, 16, seed=8)
    one, _ = _mine_all(tmp_path, "inline", x, y, 30, None)
    dbg, _ = _mine_all(
        tmp_path,
        "debug",
        x,
        y,
        30,
        Launcher(LauncherConfig(launcher="submitit-debug", launcher_dir=str(tmp_path / "logs"))),
    )
    for a, b in zip(one, dbg):
        np.testing.assert_array_equal(a, b)


def test_submitit_local_executor_runs_jobs_as_processes(tmp_path):
    """submitit's LocalExecutor goes through map_array and job pickles exactly as the Slurm backend does."""
    pytest.importorskip("submitit")
    x, y = clustered(60, 16, seed=7), clustered(50, 16, seed=8)
    one, al1 = _mine_all(tmp_path, "inline", x, y, 20, None)
    loc, al2 = _mine_all(
        tmp_path,
        "sublocal",
        x,
        y,
        20,
        Launcher(
            LauncherConfig(
                launcher="submitit-local", launcher_dir=str(tmp_path / "logs"), timeout_min=5, cpus_per_task=1, mem_gb=1
            )
        ),
    )
    for a, b in zip(one, loc):
        np.testing.assert_array_equal(a, b)
    assert list(al1.src) == list(al2.src) and list(al1.tgt) == list(al2.tgt)
    assert any((tmp_path / "logs").iterdir())  # submitit wrote its job folders


def test_cli_index_and_knn(tmp_path, sides, capsys):
    src, tgt, x, y = sides
    assert (
        index_main(
            ["--emb", str(tgt), "--out", str(tmp_path / "t.faiss"), "--factory", "IVF4,Flat", "--train-sample", "200"]
        )
        == 0
    )
    assert (
        knn_main(
            [
                "--src-emb",
                str(src),
                "--tgt-emb",
                str(tgt),
                "--out-dir",
                str(tmp_path / "k"),
                "--tgt-index",
                str(tmp_path / "t.faiss"),
                "--nprobe",
                "4",
                "--k",
                "2",
            ]
        )
        == 0
    )
    meta = json.loads((tmp_path / "k" / "src2tgt.meta.json").read_text())
    assert meta["k"] == 2 and meta["nprobe"] == 4 and meta["total"] == 300 and meta["ntotal"] == 250
    assert (tmp_path / "k" / "src.faiss").is_file()  # the missing source index was built (Flat)


# ---------------------------------------------------------------------------------------------- errors


def test_empty_embeddings_are_refused(tmp_path, sides):
    src, tgt, x, y = sides
    empty = write_emb(tmp_path / "empty", np.zeros((0, 32), np.float32))
    with pytest.raises(UserError, match="empty"):
        build_index(EmbeddingSet.open(empty), progress=False)
    with pytest.raises(UserError, match="empty"):
        mine_knn(MineKnnConfig(src_emb=str(empty), tgt_emb=str(tgt), out_dir=str(tmp_path / "k")), progress=False)


def test_wrong_dimension_is_refused(tmp_path, sides):
    src, tgt, x, y = sides
    other = write_emb(tmp_path / "d16", clustered(40, 16, seed=9))
    with pytest.raises(UserError, match="dim 32 .* dim 16|same encoder"):
        mine_knn(MineKnnConfig(src_emb=str(src), tgt_emb=str(other), out_dir=str(tmp_path / "k")), progress=False)
    idx = save_index(build_index(EmbeddingSet.open(other), progress=False), tmp_path / "d16.faiss")
    with pytest.raises(UserError, match="has dim 16"):
        knn_search(idx, src, tmp_path / "r", progress=False)


def test_mismatched_shard_is_reported(tmp_path, sides):
    src, tgt, x, y = sides
    np.save(tmp_path / "src.0001.npy", np.zeros((7, 32), np.float16))  # a shard from another run
    idx = save_index(build_index(EmbeddingSet.open(tgt), progress=False), tmp_path / "t.faiss")
    with pytest.raises(UserError, match="does not match the meta file"):
        knn_search(idx, src, tmp_path / "r", progress=False)


def test_k_larger_than_index_is_refused(tmp_path):
    small = write_emb(tmp_path / "small", clustered(3, 8, seed=1))
    big = write_emb(tmp_path / "big", clustered(20, 8, seed=2))
    idx = save_index(build_index(EmbeddingSet.open(small), progress=False), tmp_path / "s.faiss")
    with pytest.raises(UserError, match="k=4 is larger than the index \\(3 vectors\\)"):
        knn_search(idx, big, tmp_path / "r", KnnConfig(k=4), progress=False)


def test_bad_factory_and_too_few_training_rows(tmp_path, sides):
    src, tgt, x, y = sides
    with pytest.raises(UserError, match="bad FAISS factory string"):
        build_index(EmbeddingSet.open(tgt), IndexConfig(factory="NotAnIndex"), progress=False)
    with pytest.raises(UserError, match="IVF1024,Flat has 1024 lists but only 250 training rows"):
        build_index(EmbeddingSet.open(tgt), IndexConfig(factory="IVF1024,Flat"), progress=False)


def test_missing_index_and_directions_from_different_runs(tmp_path, sides):
    src, tgt, x, y = sides
    with pytest.raises(UserError, match="FAISS index not found"):
        load_index(tmp_path / "nope.faiss")
    a = mine_knn(MineKnnConfig(src_emb=str(src), tgt_emb=str(tgt), out_dir=str(tmp_path / "a")), progress=False)
    other = write_emb(tmp_path / "other", clustered(100, 32, seed=11))
    b = mine_knn(MineKnnConfig(src_emb=str(src), tgt_emb=str(other), out_dir=str(tmp_path / "b")), progress=False)
    with pytest.raises(UserError, match="do not describe the same two sets"):
        mine(KnnSet.open(a["src2tgt"]), KnnSet.open(b["tgt2src"]))


@pytest.mark.parametrize("backend", ["inline", "local"])  # submitit-debug opens pdb on failure, by design
def test_a_failing_job_surfaces_its_error(tmp_path, backend):
    from mining.knn import build_index_job

    launcher = Launcher(LauncherConfig(launcher=backend, jobs=2, launcher_dir=str(tmp_path / "logs")))
    jobs = [(str(tmp_path / f"missing{i}"), str(tmp_path / f"{i}.faiss"), IndexConfig()) for i in range(2)]
    with pytest.raises(UserError, match="embedding set not found"):
        launcher.map(build_index_job, jobs, progress=False)


def test_hnsw_coarse_quantizer_searches_wide_enough_for_nprobe(tmp_path, sides):
    """IVF_HNSW: with every list probed the result is exact, which needs efSearch >= nprobe in the quantizer."""
    import faiss

    src, tgt, x, y = sides
    path = save_index(
        build_index(EmbeddingSet.open(tgt), IndexConfig("IVF16_HNSW8,Flat", train_sample=250), progress=False),
        tmp_path / "h.faiss",
    )
    index = load_index(path, nprobe=16)
    assert faiss.downcast_index(faiss.extract_index_ivf(index).quantizer).hnsw.efSearch >= 32
    _, got = index.search(x[:50], 4)
    want, _ = brute_topk(x[:50], y, 4)
    assert (got[:, 0] == want[:, 0]).mean() > 0.99


def test_a_killed_index_writers_temp_file_is_removed_by_the_next_save(tmp_path, sides):
    import subprocess
    import sys

    from mt.common.files import temp_tag

    src, tgt, x, y = sides
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is now free: a writer that died
    host = temp_tag().rsplit("-", 1)[0]
    dead = tmp_path / f".t.faiss.{host}-{proc.pid}.ab12.tmp"
    dead.write_bytes(b"\0" * 4096)  # what a killed write_index leaves behind
    save_index(build_index(EmbeddingSet.open(tgt), progress=False), tmp_path / "t.faiss")
    assert not dead.exists() and load_index(tmp_path / "t.faiss").ntotal == 250
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_results_of_other_embeddings_are_never_reused(tmp_path):
    """An output folder keeps its index and finished shards only for the embeddings (texts) they came from."""
    src = write_emb(tmp_path / "src", clustered(120, 16, seed=1), source_sha256="a" * 64)
    tgt = write_emb(tmp_path / "tgt", clustered(100, 16, seed=2), source_sha256="b" * 64)
    cfg = MineKnnConfig(src_emb=str(src), tgt_emb=str(tgt), out_dir=str(tmp_path / "knn"), knn=KnnConfig(k=3))
    first = mine_knn(cfg, progress=False)
    kept = {p.name: p.read_bytes() for p in (tmp_path / "knn").iterdir()}
    mine_knn(cfg, progress=False)  # the same inputs: everything reused
    assert {p.name: p.read_bytes() for p in (tmp_path / "knn").iterdir()} == kept
    write_emb(tmp_path / "tgt", clustered(100, 16, seed=3), source_sha256="c" * 64)  # the target text changed
    with pytest.raises(UserError, match=r"other inputs or settings \(tgt differ\)"):
        mine_knn(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "knn").iterdir()} == kept
    write_emb(tmp_path / "tgt", clustered(100, 16, seed=2), source_sha256="b" * 64)  # back to the first text
    with pytest.raises(UserError, match=r"\(k differ\)"):
        mine_knn(
            MineKnnConfig(src_emb=str(src), tgt_emb=str(tgt), out_dir=str(tmp_path / "knn"), knn=KnnConfig(k=2)),
            progress=False,
        )
    assert set(first) == {"src2tgt", "tgt2src"}
