"""train_log.jsonl: the format's names (mt.formats.trainlog) are what mt-eval reads."""

from __future__ import annotations

from eval.train_stats import parse_train_log, read_log
from mt.formats import trainlog as tl


def test_read_records_skips_and_counts_what_is_not_a_record(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"update": 1}\n\n[1, 2]\n{"update": 2, "lo\n  {"update": 3}  \n')
    records, bad = tl.read_records(path)
    assert records == [{"update": 1}, {"update": 3}] and bad == 2


def test_records_written_with_the_names_are_read_by_mt_eval(tmp_path):
    log = tl.TrainLog(tmp_path / "train_log.jsonl")
    stability = {tl.KEY_STABILITY: {"embed": {"grad_rms": 0.1}}, tl.KEY_MONITOR_MS: 1.5}
    log.write({tl.KEY_TYPE: tl.TYPE_START, tl.KEY_UPDATE: 0})
    for u in (1, 2, 3):
        log.write({tl.KEY_TYPE: tl.TYPE_TRAIN, tl.KEY_UPDATE: u, tl.KEY_LOSS: 9.0 - u, **stability})
    spike = {tl.KEY_UPDATE: 3, tl.KEY_LOSS: 6.0, tl.KEY_MEDIAN: 7.0, tl.KEY_SPREAD: 0.1}
    log.write({tl.KEY_TYPE: tl.TYPE_SPIKE, tl.KEY_UPDATE: 3, tl.KEY_SPIKE: spike})
    per_dir = {"eng_Latn-deu_Latn": {tl.KEY_LOSS: 5.5}}
    log.write({tl.KEY_TYPE: tl.TYPE_VALID, tl.KEY_UPDATE: 3, tl.KEY_LOSS: 5.0, tl.KEY_DIRECTIONS: per_dir})
    train, valid, skipped = parse_train_log(log.path)
    assert train.values.tolist() == [[1, 8.0], [2, 7.0], [3, 6.0]] and skipped == 0
    assert sorted(map(tuple, valid.values.tolist())) == [(3, "all", 5.0), (3, "eng_Latn-deu_Latn", 5.5)]
    stats = read_log(log.path)
    assert len(stats.stats) == 3 and stats.monitor_ms == 1.5 and stats.valid_loss == 5.0
    assert [s["update"] for s in stats.spikes] == [3]
