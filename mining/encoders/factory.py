"""``load_encoder(spec)``: the encoder a spec names (specs: ``mining.encoders.base``).

The implementations are imported when a spec asks for them (each pulls in its own dependencies: torch for
LASER, the e5 / USE wheels for ``pretrained``); they import only ``base``, never this factory.
"""

from __future__ import annotations

import os
from pathlib import Path

from mining.encoders.base import Encoder, auto_encoder
from mt.common.errors import UserError
from mt.common.langs import is_code


def _laser_dir(value: str | None, spec: str) -> Path:
    if not value:
        raise UserError(
            f"encoder {spec!r} needs the LASER model directory: write laser2:DIR / laser3:DIR:LANG "
            "or pass --laser-model-dir DIR (get the files with the LASER repo's "
            "nllb/download_models.sh)"
        )
    return Path(value)


def load_encoder(spec: str, **kw) -> Encoder:
    """Build the encoder ``spec`` names (specs: ``mining.encoders.base``). Keyword arguments:
    ``laser_model_dir`` (LASER specs without a DIR), ``batch_size``, ``bf16`` (LASER: bfloat16 autocast),
    ``device`` (LASER: ``cpu``/``cuda``; default cuda when available), ``threads`` (e5/use), ``precision``
    (e5: auto, int8, fp32, bf16 or q4; ``mining.encoders.pretrained``)."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    batch_size = kw.get("batch_size")
    if kind == "auto":
        if not is_code(rest):
            raise UserError(
                f"encoder {spec!r}: write auto:LANG with the FLORES-200 code of the language mined "
                "against English, e.g. auto:zho_Hans"
            )
        return load_encoder(auto_encoder(rest), **kw)
    if kind == "e5" and rest in ("", "passage", "query"):
        from mining.encoders.pretrained import E5Encoder

        enc: Encoder = E5Encoder(
            threads=kw.get("threads"), prefix=rest or "passage", precision=kw.get("precision") or "auto"
        )
    elif kind == "use" and not rest:
        from mining.encoders.pretrained import USEEncoder

        enc = USEEncoder(threads=kw.get("threads"))
    elif kind == "ngram":
        from mining.encoders.ngram import NgramEncoder

        enc = NgramEncoder.from_spec(spec)
    elif kind == "laser2":
        from mining.encoders.laser import load_laser2

        enc = load_laser2(
            _laser_dir(rest or kw.get("laser_model_dir"), spec), bf16=kw.get("bf16", False), device=kw.get("device")
        )
    elif kind == "laser3":
        from mining.encoders.laser import load_laser3

        parts = rest.split(":") if rest else []
        if len(parts) == 1 and is_code(parts[0]):
            directory, lang = _laser_dir(kw.get("laser_model_dir"), spec), parts[0]
        elif len(parts) == 2 and is_code(parts[1]):
            directory, lang = Path(parts[0]), parts[1]
        else:
            raise UserError(
                f"encoder {spec!r}: write laser3:DIR:LANG (e.g. laser3:models/laser:wol_Latn) "
                "or laser3:LANG with --laser-model-dir"
            )
        enc = load_laser3(directory, lang, bf16=kw.get("bf16", False), device=kw.get("device"))
    elif os.path.exists(spec):
        enc = load_checkpoint_encoder(Path(spec), bf16=kw.get("bf16", False), device=kw.get("device"))
    else:
        raise UserError(
            f"unknown encoder {spec!r}: use auto:LANG, e5, e5:query, use, ngram[:DIM], laser2:DIR, "
            "laser3:DIR:LANG, or the path of an encoder checkpoint (file or directory)"
        )
    if batch_size:
        enc.batch_size = int(batch_size)
    return enc


def load_checkpoint_encoder(path: Path, bf16: bool = False, device: str | None = None) -> Encoder:
    """An encoder saved as a file or directory: today the LASER2 checkpoint format
    (``{"params", "model", "dictionary"}``) or a fairseq/LASER3 transformer, each with its ``.spm``.

    Encoders trained with this toolkit (``mine-train-encoder``) are saved in the LASER2 format, so they
    load here unchanged. A new checkpoint type gets its branch in ``mining.encoders.laser.load_checkpoint``
    (keyed on what the checkpoint dict contains), not a new spec prefix.
    """
    from mining.encoders.laser import load_checkpoint

    return load_checkpoint(path, bf16=bf16, device=device)
