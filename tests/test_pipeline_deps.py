"""Every stage's dvc.yaml deps cover every gazevlm module its notebook reaches (issue 15, item 3).

The notebook's code cells are parsed, and their `gazevlm` imports followed transitively through the
sources (imports inside functions too: they run when the stage runs). A module the stage reaches but
does not list (e.g. layout.read_table, used by annotate and heatmaps) would let `dvc repro` keep stale
outputs after a change to it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())

# Per stage, packages whose __init__ runs but whose imports do not reach the stage's outputs: the walk
# does not follow them (and does not ask for them). Each needs its reason; keep this list short.
NOT_FOLLOWED: dict[str, dict[str, str]] = {}


def module_file(name: str) -> Path | None:
    """src/gazevlm/a/b.py or src/gazevlm/a/b/__init__.py for `gazevlm.a.b`; None if it is not a module."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Names of the gazevlm modules an AST imports (`from x import y` also tries x.y as a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gazevlm"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "gazevlm":
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return found


def _with_parents(name: str) -> set[str]:
    """Importing gazevlm.a.b runs gazevlm/__init__.py and gazevlm/a/__init__.py too."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _module_level(tree: ast.Module) -> ast.Module:
    """The statements of gazevlm/__init__.py that run on import: its functions (gazevlm.load_model) import
    their modules only when called, and no stage calls them (checked in the test)."""
    return ast.Module(body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)], type_ignores=[])


def reached_modules(code: str, not_followed: tuple[str, ...] = ()) -> set[Path]:
    todo = {m for name in _imports(ast.parse(code), "") for m in _with_parents(name)}
    seen: set[str] = set(not_followed)
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        for found in _imports(_module_level(tree) if name == "gazevlm" else tree, package):
            todo |= _with_parents(found) - seen
    return files


def notebook_code(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    lines = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def _stage_deps():
    for name, stage in DVC["stages"].items():
        body = stage.get("do", stage)
        notebook = ROOT / re.search(r"papermill (\S+\.ipynb)", body["cmd"]).group(1)
        deps = [d for d in body.get("deps", []) if "${" not in d]
        yield pytest.param(notebook, deps, tuple(NOT_FOLLOWED.get(name, {})), id=name)


def _top_level_init_is_inert() -> bool:
    """gazevlm/__init__.py runs in every stage: a stage need not list it while it holds only the version
    and functions that import lazily (gazevlm.load_model, never called by a stage). Once it runs code
    (it pins the numerics: gazevlm.numerics), every stage lists it and what it imports."""
    tree = ast.parse((SRC / "gazevlm" / "__init__.py").read_text())
    return all(
        isinstance(n, ast.FunctionDef)
        or (isinstance(n, (ast.Expr, ast.Assign)) and not isinstance(getattr(n, "value", None), ast.Call))
        for n in tree.body
    )


def _init_functions() -> set[str]:
    tree = ast.parse((SRC / "gazevlm" / "__init__.py").read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("notebook,deps,not_followed", list(_stage_deps()))
def test_stage_deps_cover_every_module_its_notebook_reaches(notebook, deps, not_followed):
    code = notebook_code(notebook)
    called = sorted(f for f in _init_functions() if re.search(rf"\b{f}\b", code))
    assert not called, f"{notebook.name} calls gazevlm.{called}, whose lazy imports the walk does not follow"
    reached = {p.relative_to(ROOT) for p in reached_modules(code, not_followed)}
    if _top_level_init_is_inert():
        reached.discard(Path("src/gazevlm/__init__.py"))
    assert reached, notebook
    covered = [Path(d) for d in deps]
    missing = sorted(str(p) for p in reached if not any(p == d or d in p.parents for d in covered))
    assert not missing, f"{notebook.name}: dvc.yaml deps miss {missing}"


def test_the_import_walk_finds_lazy_and_relative_imports():
    code = "from gazevlm import annotate\nfrom gazevlm.train import trainer"
    files = {p.relative_to(SRC).as_posix() for p in reached_modules(code)}
    assert "gazevlm/annotate/cache.py" in files  # `from .cache import ...` in annotate/stage.py
    assert "gazevlm/layout.py" in files  # `from .. import ego4d, layout`
    assert "gazevlm/losses.py" in files  # imported inside train.step.model_api()
    assert "gazevlm/params.py" in files


@pytest.mark.slow
def test_bytecode_beside_the_sources_is_not_part_of_a_dependency():
    """Stages run without PYTHONDONTWRITEBYTECODE (the Makefile), so Python writes __pycache__ into the
    src/gazevlm directories the stages depend on; DVC must not hash it, or `dvc status` after `make repro`
    would call the stages that ran first changed."""
    import subprocess
    import sys

    dvc = Path(sys.executable).parent / "dvc"
    paths = ["src/gazevlm/models/__pycache__/text.cpython-311.pyc", "src/gazevlm/models/stale.pyc"]
    root = Path(__file__).resolve().parent.parent
    got = subprocess.run(
        [str(dvc), "check-ignore", *paths, "src/gazevlm/models/text.py"], cwd=root, capture_output=True, text=True
    )
    assert got.stdout.split() == paths
