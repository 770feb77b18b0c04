"""The library's shape: imports only go down the layers, and nothing imports in a circle.

Layers, bottom to top (docs/architecture.md): config, io, data, models; engine; pipeline;
zoo and the command-line entries. Every import statement counts, also those inside
functions (a lazy import is still a dependency), except under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from deepfm_lib.pipeline import stages

PACKAGE = Path(__file__).resolve().parents[1] / "deepfm_lib"
LAYERS = {"config": 0, "io": 0, "cuda": 0, "machine": 0, "data": 0, "models": 0,
          "engine": 1, "pipeline": 2,
          "zoo": 3, "train": 3, "eval": 3, "distributed": 3, "device": 3}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = (
                    name.split(".")[: -node.level]
                    if path.name != "__init__.py"
                    else (name.split(".")[: len(name.split(".")) - node.level + 1])
                )
                base = ".".join([*pkg, base] if base else pkg)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {name: _imports(name, path, set(mods)) for name, path in mods.items()}
    # models.build() imports the model files by name (importlib), which no import statement
    # shows; they count, or a module the models import could import the package unseen.
    from deepfm_lib.models import available

    graph["deepfm_lib.models"] |= {f"deepfm_lib.models.{name}" for name in available()}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_imports_only_go_down_the_layers():
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, targets in _graph().items()
        for b in targets
        if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)
    ]
    assert not upward, "\n".join(upward)


def test_every_module_has_a_layer():
    assert [m for m in _graph() if m != "deepfm_lib" and _layer(m) is None] == []


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_walker_sees_lazy_imports():
    """A test that cannot fail is no test: the walker must find an import inside a function."""
    graph = _graph()
    # stages.train imports the engine's device module inside the function body.
    assert "deepfm_lib.engine.device" in graph["deepfm_lib.pipeline.stages"]


def test_a_model_is_one_short_file():
    from deepfm_lib import models

    for name in models.available():
        lines = (PACKAGE / "models" / f"{name}.py").read_text().count("\n")
        assert lines <= 100, f"models/{name}.py has {lines} lines"


def test_train_stage_deps_are_the_code_a_run_is_fingerprinted_by():
    """Resume is allowed only for runs of the same code: the fingerprint (stages.TRAIN_CODE)
    and the deps of the stages that train (tune, train) must name the same files, or one
    drifts from the other. tuning.py decides which runs are made, not their weights."""
    dvc = yaml.safe_load((PACKAGE.parent / "dvc.yaml").read_text())
    for stage in ("tune", "train"):
        deps = {d for d in dvc["stages"][stage]["deps"] if d.startswith("deepfm_lib")}
        assert deps - {"deepfm_lib/pipeline/tuning.py"} == set(stages.TRAIN_CODE), stage
