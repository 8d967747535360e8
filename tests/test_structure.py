"""The package's shape, measured with ``ast``: no import cycle (imports inside functions included), inference
never imports training, one public name per meaning, no module over ~500 lines without a reason, ruff clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "deep_puppets"
MAX_LINES = 500
LONG_REASON = "Why one module:"  # a module over MAX_LINES says why in its docstring, after these words

# Inference (what the synthesis job and a future studio load) and the training-only modules it must not reach.
INFERENCE = ("deep_puppets.gan.inference", "deep_puppets.gan.synthesize", "deep_puppets.gan.held_out", "deep_puppets.gan.headroom",
             "deep_puppets.studio.engine")
TRAINING = tuple(f"deep_puppets.gan.{m}" for m in ("train", "trainer", "losses", "checkpoints", "run_folder", "training_log"))

# Public module-level names that several modules define on purpose, each with the same meaning everywhere.
SAME_MEANING = {"log"}  # each module's own logging.getLogger(__name__)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its body (inside functions too). ``from a import b`` counts
    as importing ``a.b`` when that is a module, else ``a``; a package's ``__init__`` is not counted for a submodule."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("deep_puppets"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in modules else target)
    out.discard(name)
    return {m for m in out if m in modules}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for v in graph.get(todo.pop(), ()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


def test_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # a function-level import is an edge like any other
    (tmp_path / "deep_puppets").mkdir()
    src = tmp_path / "deep_puppets" / "x.py"
    src.write_text("def f():\n    from .y import g\n    from deep_puppets import z\n")
    modules = {"deep_puppets.x": src, "deep_puppets.y": src, "deep_puppets.z": src}
    assert imported_modules("deep_puppets.x", src, modules) == {"deep_puppets.y", "deep_puppets.z"}


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_inference_imports_no_training_module():
    graph = import_graph()
    for module in INFERENCE + TRAINING:
        assert module in graph, f"{module} is gone: update this test's lists"
    for module in INFERENCE:
        assert not reachable(graph, module) & set(TRAINING), f"{module} reaches {reachable(graph, module) & set(TRAINING)}"


def public_definitions() -> dict[str, list[str]]:
    """Public module-level functions, classes and constants -> the modules that define them."""
    defined: dict[str, list[str]] = {}
    for name, path in package_modules().items():
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
            for n in names:
                if not n.startswith("_") and n not in defined.setdefault(n, []) and name not in defined[n]:
                    defined[n].append(name)
    return defined


def test_one_definition_per_public_name():
    twice = {n: mods for n, mods in public_definitions().items() if len(mods) > 1 and n not in SAME_MEANING}
    assert not twice, "defined in several modules: " + "; ".join(f"{n}: {', '.join(m)}" for n, m in sorted(twice.items()))


def test_no_module_over_500_lines_without_a_reason():
    long = []
    for name, path in package_modules().items():
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > MAX_LINES and LONG_REASON not in doc:
            long.append(f"{name} ({n} lines)")
    assert not long, f"over {MAX_LINES} lines with no '{LONG_REASON}' in the docstring: {', '.join(long)}"


def test_every_module_says_its_concern():
    missing = [name for name, path in package_modules().items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: requirements.txt pins it and bash setup.sh installs it"
    r = subprocess.run([ruff, "check", "--no-cache", "deep_puppets", "workflow_scripts", "tests", "benchmarks", "scripts"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


# Libraries no module that Snakemake imports while it parses the workflow may load: every Snakemake run (and every
# SLURM job, which parses the workflow twice) pays for them, about 3 s for torch alone on 2 cores.
HEAVY = ("torch", "cv2", "mediapipe", "moderngl", "onnxruntime", "av", "matplotlib", "pandas")  # h5py (0.16 s) is allowed


def workflow_imports() -> list[str]:
    """The ``deep_puppets`` modules the Snakefile and rules/*.smk import at parse time."""
    names, modules = set(), package_modules()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 4 and words[0] == "from" and words[1].startswith("deep_puppets") and words[2] == "import":
                base = words[1]
                for part in " ".join(words[3:]).replace(",", " ").split():
                    if part == "as":
                        break
                    names.add(f"{base}.{part}" if f"{base}.{part}" in modules else base)
            elif len(words) >= 2 and words[0] == "import" and words[1].startswith("deep_puppets"):
                names.add(words[1])
    return sorted(names)


def test_parsing_the_workflow_loads_no_heavy_library():
    names = workflow_imports()
    assert "deep_puppets.config" in names and "deep_puppets.cross_recording" in names, names
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names)
            + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "", f"parsing the workflow imports {r.stdout.strip()} (through {names})"
