"""The package installs under one namespace, imports flow one way, the CLI entry points agree."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

SUBPACKAGES = ("backbones", "heads", "tasks", "studies", "datasets", "tools")
# Who may import whom (STYLE.md): backbones <- heads <- tasks <- studies <- tools; datasets by
# tasks, studies and tools.
ALLOWED = {
    "backbones": set(),
    "heads": {"backbones"},
    "datasets": set(),
    "tasks": {"backbones", "heads", "datasets"},
    "studies": {"backbones", "heads", "datasets", "tasks"},
    "tools": {"backbones", "heads", "datasets", "tasks", "studies"},
}


def _run(code: str, cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_only_the_resvision_namespace_is_installed(tmp_path):
    """From a neutral directory, ``datasets``/``tools``/... are not ours; ``resvision.*`` is."""
    code = (
        "import importlib.util, json\n"
        f"names = {list(SUBPACKAGES)!r}\n"
        "top = {n: getattr(importlib.util.find_spec(n), 'origin', None) for n in names}\n"
        "sub = {n: importlib.util.find_spec('resvision.' + n).origin for n in names}\n"
        "print(json.dumps({'top': top, 'sub': sub}))\n"
    )
    found = json.loads(_run(code, tmp_path))
    for name in SUBPACKAGES:
        top = found["top"][name]
        assert top is None or not Path(top).resolve().is_relative_to(REPO), (name, top)
        assert Path(found["sub"][name]).resolve() == REPO / name / "__init__.py"


@pytest.mark.slow
def test_wheel_holds_only_resvision(tmp_path):
    """``pip install .`` (a wheel) maps each folder under resvision/ and nothing else."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("resvision-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    code = [
        n
        for n in names
        if not n.startswith("resvision-") or not n.split("/")[0].endswith(".dist-info")
    ]
    assert code and all(n.startswith("resvision/") for n in code), code
    assert "resvision/__init__.py" not in names  # implicit namespace package
    for sub in SUBPACKAGES:
        assert f"resvision/{sub}/__init__.py" in names
    assert not [n for n in names if "benchmarks" in n]  # the benchmark programs stay in the tree
    local = {
        p.relative_to(REPO).as_posix() for sub in SUBPACKAGES for p in (REPO / sub).rglob("*.py")
    }
    assert {f"resvision/{p}" for p in local} <= set(names)
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "resvision = resvision.tools.cli:run" in zipfile.ZipFile(wheel).read(meta).decode()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                package = path.parent.relative_to(REPO).parts
                base = package[: len(package) - node.level + 1]
                found.add(".".join(("resvision", *base, node.module or "")))
            elif node.module:
                found.add(node.module)
    return found


def test_imports_flow_one_way():
    bad = []
    for sub, allowed in ALLOWED.items():
        for path in (REPO / sub).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] in SUBPACKAGES:
                    bad.append(f"{path.relative_to(REPO)} imports top-level {name}")
                if parts[0] == "resvision" and len(parts) > 1:
                    target = parts[1]
                    if target != sub and target not in allowed:
                        bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["resvision", *parts])


def _import_graph() -> dict[str, set[str]]:
    """Every library module -> the library modules it imports (at any level of the file, but
    not under ``if TYPE_CHECKING``): ``from . import x`` names both the package and ``x``."""
    modules = {_module_name(p): p for sub in SUBPACKAGES for p in (REPO / sub).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
            for n in ast.walk(node)
        }
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other (strongly connected, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    """Inside every package imports run one way (config -> model -> inference, ...): no group of
    modules imports each other, function-level imports included."""
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_task_packages_import_no_other_task_package():
    """A task package uses the engine and the lower layers, never another task."""
    tasks = {p.name for p in (REPO / "tasks").iterdir() if (p / "model.py").is_file()}
    assert {"detection", "segmentation", "face"} <= tasks
    bad = []
    for name, targets in _import_graph().items():
        parts = name.split(".")
        if len(parts) > 2 and parts[1] == "tasks" and parts[2] in tasks:
            for t in targets:
                tp = t.split(".")
                if len(tp) > 2 and tp[1] == "tasks" and tp[2] in tasks and tp[2] != parts[2]:
                    bad.append(f"{name} imports {t}")
    assert not bad, "\n".join(bad)


def test_the_library_holds_no_command_line():
    """argparse lives in tools/ (and the benchmark programs), never in the library."""
    users = [
        p.relative_to(REPO).as_posix()
        for sub in ("backbones", "heads", "datasets", "tasks")
        for p in (REPO / sub).rglob("*.py")
        if "argparse" in _imports(p)
    ]
    assert not users, users


def test_console_script_and_module_agree():
    script = Path(sys.executable).with_name("resvision")
    a = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    b = subprocess.run(
        [sys.executable, "-m", "resvision.tools", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert a.stdout == b.stdout and a.stdout.startswith("resvision ")


def test_backbones_command_prints_the_table():
    from resvision.tools.cli import main

    out = subprocess.run(
        [sys.executable, "-m", "resvision.tools", "backbones", "resnet5*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()[2:]}
    assert set(rows) == {"resnet50", "resnet50d"}
    assert "c1:64/2 c2:256/4 c3:512/8 c4:1024/16 c5:2048/32" in rows["resnet50"]
    assert "23.51" in rows["resnet50"] and "0.485,0.456,0.406" in rows["resnet50"]
    assert main(["backbones", "nothing*"]) == 2  # a user error: one line, exit code 2


def test_every_task_package_has_the_layout_the_readme_describes():
    """config, model, inference, export, visualize, evaluation, task, and a line in the CLI's
    table (README, Layout)."""
    from resvision.tools.tasks import TASKS

    packages = {p.name for p in (REPO / "tasks").iterdir() if (p / "model.py").is_file()}
    files = ("config", "model", "inference", "export", "visualize", "evaluation", "task")
    for name in packages:
        missing = [f for f in files if not (REPO / "tasks" / name / f"{f}.py").is_file()]
        assert not missing, (name, missing)
    assert {v.split(":")[0].split(".")[2] for v in TASKS.values()} == packages
    for where in TASKS.values():  # the table names each task's class, as grep finds it
        module, cls = where.split(":")
        assert (
            f"class {cls}(" in (REPO / Path(*module.split(".")[1:])).with_suffix(".py").read_text()
        )
    layout = (REPO / "docs" / "layout.md").read_text()
    assert "**A new task** is a package `tasks/<task>/`" in layout


def test_tasks_holds_only_task_packages_the_engine_and_pipelines():
    """Every folder in ``tasks/`` is a task package (its ``model.py`` and ``task.py``, a line in
    the CLI's table), ``engine/`` or ``pipelines/``; every module there is ``__init__.py``.
    Anything else (a study, a formatter) has a room named for what it holds."""
    from resvision.tools.tasks import TASKS

    tasks = {where.split(":")[0].split(".")[2] for where in TASKS.values()}
    strays = []
    for entry in sorted((REPO / "tasks").iterdir()):
        if entry.name == "__pycache__":
            continue
        if entry.is_file():
            if entry.name != "__init__.py":
                strays.append(entry.name)
        elif entry.name not in {"engine", "pipelines"} and not (
            entry.name in tasks and (entry / "model.py").is_file() and (entry / "task.py").is_file()
        ):
            strays.append(f"{entry.name}/")
    assert not strays, f"in tasks/ but neither a task package, engine/ nor pipelines/: {strays}"


def _lazy_exports(path: Path) -> tuple[dict[str, str] | None, dict[str, str]]:
    """A package's ``_EXPORTS`` table (None without one) and the names its
    ``if TYPE_CHECKING:`` block imports, each -> the submodule it comes from."""
    tree = ast.parse(path.read_text(), filename=str(path))
    table, block = None, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
        elif isinstance(node, ast.If) and ast.dump(node.test) == ast.dump(
            ast.Name("TYPE_CHECKING", ast.Load())
        ):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1, ast.unparse(imp)
                for alias in imp.names:
                    # ``X as X``: the explicit re-export form type checkers recognize
                    assert alias.asname in (None, alias.name), ast.unparse(imp)
                    block[alias.asname or alias.name] = imp.module
    return table, block


def test_every_lazy_export_table_has_a_type_checking_twin():
    """Each package that imports its names on first use (``_EXPORTS`` + ``__getattr__``, so that
    ``--help`` and configs import no torch) names the same things, from the same submodules, in
    an ``if TYPE_CHECKING:`` block beside the table: editors' "go to definition", type checkers
    and grep find the real definitions."""
    packages = sorted(p for sub in SUBPACKAGES for p in (REPO / sub).rglob("__init__.py"))
    checked = []
    for path in packages:
        table, block = _lazy_exports(path)
        if table is None:
            assert not block, f"{path.relative_to(REPO)}: a TYPE_CHECKING block without _EXPORTS"
            continue
        where = path.relative_to(REPO)
        assert block == table, (
            f"{where}: only in _EXPORTS {sorted(set(table.items()) - set(block.items()))}; "
            f"only in the TYPE_CHECKING block {sorted(set(block.items()) - set(table.items()))}"
        )
        checked.append(where.parent.as_posix())
    assert {"backbones", "heads/detection", "tasks/engine", "tasks/face"} <= set(checked)


def test_the_lazy_export_check_sees_a_missing_name(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .a import X as X\n"
        "_EXPORTS = {'X': 'a', 'Y': 'b'}\n"
    )
    table, block = _lazy_exports(init)
    assert table == {"X": "a", "Y": "b"} and block == {"X": "a"}


def test_each_config_class_is_defined_once():
    """A config section has one class (``SegModelConfig`` once lived in heads/ and tasks/): a
    reader's "go to definition" and a preset's keys find one set of defaults."""
    where: dict[str, list[str]] = {}
    for sub in SUBPACKAGES:
        for path in (REPO / sub).rglob("*.py"):
            for node in ast.parse(path.read_text(), filename=str(path)).body:
                if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                    where.setdefault(node.name, []).append(path.relative_to(REPO).as_posix())
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, twice
    assert where["SegModelConfig"] == ["heads/segmentation/config.py"]
