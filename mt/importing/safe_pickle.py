"""Read fairseq checkpoints without fairseq and without running code from the file.

A fairseq ``checkpoint.pt`` is a ``torch.save`` pickle: ``model`` (the state dict), ``args`` (an
``argparse.Namespace``, or None), ``cfg`` (an omegaconf ``DictConfig``, or since 2021 a plain dict whose
``model`` entry is often a Namespace), ``optimizer_history``, ``extra_state`` and ``last_optimizer_state``.
Unpickling calls whatever globals the pickle names, so ``torch.load(weights_only=False)`` on a downloaded
file runs any code its author put there, and ``weights_only=True`` refuses the config objects.

``load_checkpoint`` hands torch.load a pickle module whose Unpickler resolves globals from an allow-list
only (torch still rebuilds the tensors and memory-maps their storages):

- tensors and containers: torch's tensor-rebuild functions, dtypes, ``torch.Size``, ``OrderedDict``,
  ``defaultdict``, the builtin container and number types, numpy scalars and arrays (fairseq's
  ``extra_state`` holds numpy numbers);
- config objects: ``argparse.Namespace`` and every ``omegaconf`` class become inert ``ConfigRecord``
  objects that keep their pickled state (the real classes are never imported, so omegaconf need not be
  installed); ``to_plain`` turns them into dicts, lists and values;
- type references in omegaconf's metadata (``typing.Any``, fairseq's config dataclasses and enums)
  become inert ``TypeRef`` names; calling one with a single value (how an Enum member is pickled) gives
  the value.

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) stops the load with a
UserError naming it, before it is called. Files in torch's zip format are memory-mapped, so what is not
used (``last_optimizer_state``, the bulk of a training checkpoint) is never read from disk.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import codecs
import collections
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from mt.common.errors import UserError


class RefusedGlobal(UserError):
    """The checkpoint names a global outside the allow-list."""


class ConfigRecord:
    """An ``argparse.Namespace`` or omegaconf object as pickled: its class name and state, nothing else."""

    kind = ""
    state: Any = None
    args: tuple = ()

    def __init__(self, *args: Any) -> None:  # built by REDUCE (a call) instead of NEWOBJ + BUILD
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.kind}>"


class TypeRef:
    """A type named by the pickle (``typing.Any``, a fairseq dataclass or enum), kept as its name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs:  # an Enum member is pickled as EnumClass(value): keep the value
            return args[0]
        raise RefusedGlobal(
            f"the checkpoint calls {self.name} with {len(args)} arguments; only config values and tensors are loaded"
        )

    def __repr__(self) -> str:
        return self.name


def _subscript(obj: Any, key: Any) -> Any:
    """``operator.getitem`` as pickled for ``typing.Optional[int]`` and the like: only on type references."""
    if isinstance(obj, TypeRef):
        return TypeRef(f"{obj.name}[...]")
    raise RefusedGlobal("the checkpoint calls operator.getitem on a value; only type annotations may use it")


def _type_of(*args: Any) -> type:
    """``builtins.type`` as pickled for ``type(None)`` (in ``Optional[...]`` annotations); never builds a class."""
    if len(args) == 1 and (args[0] is None or args[0] is Ellipsis or args[0] is NotImplemented):
        return type(args[0])
    raise RefusedGlobal("builtins.type (called to build a class)")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    out: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = multiarray.scalar
        out[(mod, "_reconstruct")] = multiarray._reconstruct
    return out


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("operator", "getitem"): _subscript,
        ("_operator", "getitem"): _subscript,
        ("_codecs", "encode"): codecs.encode,  # bytes under pickle protocol 2
        ("builtins", "type"): _type_of,
    }
    if hasattr(torch._utils, "_rebuild_parameter_with_state"):
        allowed[("torch._utils", "_rebuild_parameter_with_state")] = torch._utils._rebuild_parameter_with_state
    for t in (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, bool, complex, type(None)):
        allowed[("builtins", t.__name__)] = t
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    allowed.update(_numpy_globals())
    return allowed


_ALLOWED: dict[tuple[str, str], Any] | None = None
_RECORDS: dict[str, type] = {}


def _record_class(kind: str) -> type:
    if kind not in _RECORDS:
        _RECORDS[kind] = type(kind.rsplit(".", 1)[-1], (ConfigRecord,), {"kind": kind})
    return _RECORDS[kind]


def resolve_global(module: str, name: str) -> Any:
    """What the restricted unpickler gives for ``module.name``; RefusedGlobal for anything else."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed()
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if (module, name) == ("argparse", "Namespace") or module == "omegaconf" or module.startswith("omegaconf."):
        return _record_class(f"{module}.{name}")
    if module == "typing" or module == "fairseq" or module.startswith("fairseq."):
        return TypeRef(f"{module}.{name}")
    raise RefusedGlobal(f"{module}.{name}")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from the allow-list (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles (torch.save's) spell builtins the Python 2 way (__builtin__.long for int)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        return resolve_global(module, name)


def pickle_module() -> types.ModuleType:
    """A stand-in for the ``pickle`` module, for ``torch.load(pickle_module=...)``."""
    mod = types.ModuleType("mt_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    mod.load = lambda fh, **kw: RestrictedUnpickler(fh, **kw).load()  # type: ignore[attr-defined]
    return mod


def load_checkpoint(path: str | os.PathLike, drop: tuple[str, ...] = ("last_optimizer_state",)) -> dict[str, Any]:
    """A fairseq checkpoint as a dict (config objects still ``ConfigRecord``s: see ``to_plain``).

    Zip-format files (torch >= 1.6) are memory-mapped: tensors are views of the file, read when used. The
    keys in ``drop`` are removed at once, so their tensors are never read. A global outside the
    allow-list is a UserError naming it; nothing it names is called.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: fairseq checkpoint not found")
    mmap = zipfile.is_zipfile(path)
    try:
        state = torch.load(path, map_location="cpu", pickle_module=pickle_module(), weights_only=False, mmap=mmap)
    except RefusedGlobal as exc:
        raise UserError(
            f"{path}: refused to load: the pickle names {exc}, which is neither a tensor nor a config value "
            "(a fairseq checkpoint needs nothing else); nothing from the file was run. Only import checkpoints "
            "from a source you trust"
        ) from None
    except UserError:
        raise
    except Exception as exc:  # torch/pickle raise many types for broken files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({reason}); is the download complete?") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a fairseq checkpoint (the pickle holds a {type(state).__name__}, not a dict)")
    for key in drop:
        state.pop(key, None)
    return state


def to_plain(obj: Any) -> Any:
    """Config records, type references and containers as plain dicts, lists, strings and numbers."""
    if isinstance(obj, ConfigRecord):
        state = obj.state if isinstance(obj.state, dict) else {}
        kind = obj.kind.rsplit(".", 1)[-1]
        if obj.kind == "argparse.Namespace":
            return {k: to_plain(v) for k, v in state.items()}
        if kind in ("DictConfig", "ListConfig"):
            content = state.get("_content")
            if isinstance(content, dict):
                return {k: to_plain(v) for k, v in content.items()}
            if isinstance(content, (list, tuple)):
                return [to_plain(v) for v in content]
            return content  # None, "???" (missing) or an interpolation string
        if "_val" in state:  # a value node
            return to_plain(state["_val"])
        return None  # metadata and the like
    if isinstance(obj, TypeRef):
        return obj.name
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, argparse.Namespace):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    return obj
