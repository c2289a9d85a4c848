from collections import Counter

import numpy as np

from mt.data.splits import canonical, choose_eval_langs, hold_out_mono, pair_rows, select_eval, train_pairs


def test_choose_eval_langs_drops_the_blocking_language_and_readmits():
    # 6 strings x 3 languages: column 2 misses the first 4 strings; columns 0 and 1 cover all
    cover = np.ones((6, 3), dtype=bool)
    cover[:4, 2] = False
    keep, dropped = choose_eval_langs(cover, need=5)
    assert (keep, dropped) == ([0, 1], [2])
    keep, dropped = choose_eval_langs(cover, need=2)  # 2 strings are covered by all three: nothing dropped
    assert (keep, dropped) == ([0, 1, 2], [])


def test_choose_eval_langs_prefers_dropping_small_languages():
    cover = np.ones((4, 2), dtype=bool)
    cover[0, 0] = cover[1, 1] = False  # each column blocks one string
    assert choose_eval_langs(cover, need=3, weight=np.array([100.0, 1.0]))[1] == [1]
    assert choose_eval_langs(cover, need=3, weight=np.array([1.0, 100.0]))[1] == [0]


def test_canonical_is_most_frequent_then_smallest():
    assert canonical(Counter({"b": 2, "a": 1, "c": 2})) == "b"


def pairs_for(n: int, lang: str, start: int = 0) -> dict[str, Counter]:
    return {f"english sentence {i}": Counter({f"{lang} sentence {i}": 1}) for i in range(start, start + n)}


def test_select_eval_is_nway_and_respects_blocked_and_eligible():
    pairs = {"aaa_Latn": pairs_for(30, "a"), "bbb_Latn": pairs_for(30, "b", start=5), "ccc_Latn": pairs_for(3, "c")}
    ev = select_eval(
        pairs,
        list(pairs),
        4,
        6,
        seed=1,
        blocked={"english sentence 7"},
        eligible={f"english sentence {i}" for i in range(20)},
    )
    assert ev.langs == ["aaa_Latn", "bbb_Latn"] and ev.not_covered == ["ccc_Latn"]
    assert len(ev.dev) == 4 and len(ev.devtest) == 6
    used = ev.dev + ev.devtest
    assert "english sentence 7" not in used and all(5 <= int(e.split()[-1]) < 20 for e in used)
    assert ev.lines("dev", "bbb_Latn") == [e.replace("english", "b") for e in ev.dev]


def test_hold_out_mono_and_train_pairs_are_disjoint():
    trans = pairs_for(100, "x")
    trans["ambiguous english"] = Counter({"one": 1, "two": 1})  # never hidden: not 1:1
    rows = pair_rows(trans)
    pool = [(f"other english {i}", f"other english {i}") for i in range(50)]
    mono = hold_out_mono(rows, pool, size=30, max_fraction=0.2, blocked={"english sentence 3"}, seed="s")
    assert len(mono.hidden) == 20  # 0.2 x 100 usable pairs
    assert len(mono.english) == len(mono.foreign) == 40
    assert all(trans[mono.english[i]][mono.foreign[j]] for i, j in mono.gold)
    assert ("english sentence 3", "x sentence 3") not in mono.hidden
    hidden = {s for pair in mono.hidden for s in pair}
    kept, removed = train_pairs(rows, {"mono": hidden, "decontaminated": {"english sentence 3"}})
    assert len(kept) == 102 - 20 - 1 and removed == Counter({"mono": 20, "decontaminated": 1})
    assert not hidden & {s for pair in kept for s in pair}
