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

SUBPACKAGES = ("backbones", "heads", "tasks", "datasets", "tools")
# Who may import whom (STYLE.md): backbones <- heads <- tasks <- tools; datasets by tasks/tools.
ALLOWED = {
    "backbones": set(),
    "heads": {"backbones"},
    "datasets": set(),
    "tasks": {"backbones", "heads", "datasets"},
    "tools": {"backbones", "heads", "datasets", "tasks"},
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
    local = {
        p.relative_to(REPO).as_posix() for sub in SUBPACKAGES for p in (REPO / sub).rglob("*.py")
    }
    assert {f"resvision/{p}" for p in local} <= set(names)
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "resvision = resvision.tools.cli:main" in zipfile.ZipFile(wheel).read(meta).decode()


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
