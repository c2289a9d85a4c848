"""The layering of ``mt/``, ``mining/`` and ``eval/``, checked over the import graph (no import-linter needed).

Layers, lowest first; a module imports only its own layer or lower ones::

    mt.common < mt.data < mt.models < mt.formats < {mt.train, mt.generate, mt.importing} < {mining, eval} < CLIs

CLI modules (any ``cli.py`` or ``__main__.py``) form the top layer. Within one layer the packages ({mt.train,
mt.generate, mt.importing}; {mining, eval}) do not import each other, and nothing above training but a CLI
imports ``mt.train``, except through the SEAMS below: each a deliberate, named entry point with its reason.
Imports inside functions count as much as module-level ones: they are how cycles hide. Parent packages that
an import initialises on the way are not counted (every package ``__init__`` of ours only re-exports), nor
are ``importlib`` imports by name (only the CLI dispatchers use them).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mt", "mining", "eval")

# lowest first; a component is a package prefix (the longest one that matches a module wins)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("mt.common",),
    ("mt.data",),
    ("mt.models",),
    ("mt.formats",),  # checkpoint and training-log formats: below everything that writes or reads them
    ("mt.train", "mt.generate", "mt.importing"),
    ("mining", "eval"),
)
ROOT_MODULES = ("mt", "mining", "eval")  # the packages' own __init__ (a version string, docstrings): lowest
CLI_NAMES = ("cli", "__main__")  # the top layer: argument parsing and dispatch only
# components that the layers above reach only through a seam (CLIs excepted): the training loop is a leaf
ENTRY_POINT_ONLY = ("mt.train",)
# never, not even from a CLI module of the importer's package
FORBIDDEN = (("mt.generate", "mt.train"),)  # generation must run without any training code


@dataclass(frozen=True)
class Seam:
    """Modules under ``importer`` may import ``names`` (None: anything) from module ``target``."""

    importer: str
    target: str
    names: frozenset[str] | None
    why: str


def _public_api(init: Path) -> frozenset[str]:
    """The names a package's ``__init__`` lists in ``__all__``: its public API."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


SEAMS: tuple[Seam, ...] = (
    Seam(
        "mt",
        "mt.common.threads",
        frozenset({"passive_wait_early"}),
        "the package's __init__ runs before any module imports torch: the one place where OMP_WAIT_POLICY can "
        "still be set for the console scripts (libgomp reads it once, when it loads)",
    ),
    Seam(
        "mt.train",
        "mt.generate",
        _public_api(ROOT / "mt" / "generate" / "__init__.py"),
        "validation decodes through generation's public decoding API (mt/generate/__init__.py __all__), never "
        "through its modules, so generate can change inside without breaking training",
    ),
    Seam(
        "mining",
        "mt.train.trainer",
        frozenset({"train", "TrainConfig"}),
        "the one deliberate seam: mine-train-encoder trains the LASER student with mt-train's loop, through its "
        "public entry point train(TrainConfig, model_factory)",
    ),
    Seam(
        "mining",
        "mt.train.criterion",
        frozenset({"CriterionOutput", "LabelSmoothedCrossEntropy"}),
        "the same seam: the model factory given to train() returns the criterion, so the criterion's interface "
        "is part of the entry point",
    ),
    Seam(
        "mt.generate.moe_prune",
        "mt.importing.convert",
        frozenset({"check_outputs", "write_folder"}),
        "mt-moe-prune writes its model folder (one file per expert) with mt-import's writer: one owner of that layout",
    ),
    Seam(
        "eval.translate_test",
        "mining.encoders",
        frozenset({"load_encoder"}),
        "translate-test embeds sentences with mining's encoders through their public factory",
    ),
    Seam(
        "mt.generate.generate",
        "eval.metrics",
        frozenset({"MetricSpec"}),
        "TEMPORARY: mt-generate --scoring bleu takes mt-eval's tokenizer per target language, so both print the "
        "same BLEU; the rule (eval.metrics.bleu_tokenizer) belongs in mt.common, then this seam goes",
    ),
)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of ours
    names: tuple[str, ...]  # what ``from target import ...`` takes; () when the module itself is imported
    line: int
    text: str  # the import statement as written
    in_function: bool

    def where(self, modules: dict[str, Path]) -> str:
        path = modules[self.importer].relative_to(ROOT)
        return f"{path}:{self.line}: {self.text}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``name`` (a module or a name inside one) lives in, or None (not ours)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _function_nodes(tree: ast.AST) -> set[int]:
    """ids of the import statements that sit inside a function body."""
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inside


def _base(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports_in(importer: str, source: str, modules: dict[str, Path], is_package: bool = False) -> list[Import]:
    """Every import of one of our modules in ``source`` (module level and inside functions)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    in_fn = _function_nodes(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(_ours(a.name, modules), ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(node, importer, is_package)
            targets = []
            for a in node.names:
                sub = f"{base}.{a.name}"
                targets.append((sub, ()) if sub in modules else (_ours(base, modules), (a.name,)))
        else:
            continue
        grouped: dict[str, tuple[str, ...]] = {}
        for target, names in targets:
            if target is not None and target != importer:
                grouped[target] = grouped.get(target, ()) + names
        text = " ".join(s.strip() for s in lines[node.lineno - 1 : node.end_lineno])
        for target, names in grouped.items():
            found.append(Import(importer, target, names, node.lineno, text, id(node) in in_fn))
    return sorted(found, key=lambda i: (i.line, i.target))


@functools.lru_cache(maxsize=None)
def all_imports() -> tuple[Import, ...]:
    modules = all_modules()
    out: list[Import] = []
    for name, path in modules.items():
        out += imports_in(name, path.read_text(encoding="utf-8"), modules, path.name == "__init__.py")
    return tuple(out)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def component(module: str) -> str | None:
    if module in ROOT_MODULES:
        return module
    matches = [c for layer in LAYERS for c in layer if _under(module, c)]
    return max(matches, key=len) if matches else None


def is_cli(module: str) -> bool:
    return module.rpartition(".")[2] in CLI_NAMES


def rank(module: str) -> int:
    """The module's layer: 0 the lowest, ``len(LAYERS)`` the CLIs."""
    if is_cli(module):
        return len(LAYERS)
    if module in ROOT_MODULES:
        return 0
    comp = component(module)
    assert comp is not None, f"{module} is in no layer: add its package to LAYERS in tests/test_layering.py"
    return next(i for i, layer in enumerate(LAYERS) if comp in layer)


def seam_for(imp: Import) -> Seam | None:
    for seam in SEAMS:
        if _under(imp.importer, seam.importer) and imp.target == seam.target:
            if seam.names is None or (imp.names and set(imp.names) <= seam.names):
                return seam
    return None


def violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the layering, or None."""
    src, dst = imp.importer, imp.target
    for a, b in FORBIDDEN:
        if _under(src, a) and _under(dst, b):
            return f"{a} must not import {b}"
    if is_cli(src) or seam_for(imp) is not None:
        return None
    if rank(dst) > rank(src):
        return f"imports a higher layer ({component(src)} is layer {rank(src)}, {dst} layer {rank(dst)})"
    if rank(dst) == rank(src) and component(dst) != component(src):
        return f"imports a sibling package of its layer ({component(dst)}) outside the listed SEAMS"
    entry_only = [c for c in ENTRY_POINT_ONLY if _under(dst, c) and not _under(src, c)]
    if entry_only:
        return f"reaches into {entry_only[0]}, which the layers above use only through a listed seam"
    return None


def test_every_module_sits_in_a_layer():
    assert component("mt.newmodule") is None and component("mt") == "mt"  # the root is not a catch-all
    lost = [m for m in all_modules() if not is_cli(m) and component(m) is None]
    assert not lost, f"modules in no layer of tests/test_layering.py LAYERS (add their package): {lost}"


def test_imports_respect_the_layers():
    modules = all_modules()
    bad = [f"{imp.importer}: {why}\n    {imp.where(modules)}" for imp in all_imports() if (why := violation(imp))]
    assert not bad, "layering broken (see tests/test_layering.py for the layers and seams):\n" + "\n".join(bad)


def test_every_seam_is_still_used():
    """A seam nothing uses any more is deleted, so the list stays the set of real exceptions."""
    used = {id(s) for imp in all_imports() if (s := seam_for(imp)) is not None}
    stale = [f"{s.importer} -> {s.target}" for s in SEAMS if id(s) not in used]
    assert not stale, f"seams no import needs any more (remove them from SEAMS): {stale}"


def test_generate_exports_the_decoding_api_training_uses():
    import mt.generate

    public = _public_api(ROOT / "mt" / "generate" / "__init__.py")
    assert {"greedy_decode", "banned_ids"} <= public
    assert all(hasattr(mt.generate, name) for name in public)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.append(w)
                    if w == v:
                        break
                if len(scc) > 1:
                    found.append(sorted(scc))
    return found


def test_no_import_cycles():
    modules = all_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for imp in all_imports():
        edges[imp.importer].add(imp.target)
    report = []
    for scc in _cycles(edges):
        inside = [imp.where(modules) for imp in all_imports() if imp.importer in scc and imp.target in scc]
        report.append(f"cycle {' <-> '.join(scc)}:\n    " + "\n    ".join(inside))
    assert not report, "import cycles (function-level imports count too):\n" + "\n".join(report)


# --- the checker itself --------------------------------------------------------------------------
FAKE = {m: Path(m) for m in ("mt.models.ffn", "mt.models.moe", "mt.generate", "mt.generate.search", "mt.train.x")}


def test_function_level_and_relative_imports_are_seen():
    source = "import os\nfrom . import moe\n\ndef f():\n    from mt.generate import search, Translator\n"
    got = imports_in("mt.models.ffn", source, FAKE)
    assert [(i.target, i.names, i.line, i.in_function) for i in got] == [
        ("mt.models.moe", (), 2, False),
        ("mt.generate", ("Translator",), 5, True),
        ("mt.generate.search", (), 5, True),
    ]


@pytest.mark.parametrize(
    "importer, target, names, broken",
    [
        ("mt.models.moe", "mt.generate.search", (), True),  # upwards
        ("mt.generate.cli", "mt.train.x", (), True),  # forbidden even from a CLI
        ("mt.train.validate", "mt.generate", ("greedy_decode",), False),  # the public decoding API
        ("mt.train.validate", "mt.generate.loading", ("banned_ids",), True),  # a generate module
        ("mining.train_encoder", "mt.train.trainer", ("train",), False),  # the entry point
        ("mining.embed", "mt.train.optim", ("build",), True),  # training internals
        ("mining.cli", "mt.train.optim", ("build",), False),  # a CLI may
        ("eval.report", "mining.margin", ("mine",), True),  # a sibling outside the seams
    ],
)
def test_rules(importer, target, names, broken):
    assert (violation(Import(importer, target, names, 1, "", False)) is not None) == broken
