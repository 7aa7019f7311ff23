"""Every command and Python block the README shows runs (the README cannot drift)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    commands = []
    for lang, body in BLOCKS:
        if lang != "bash":
            continue
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("resvision ", "python -m resvision")):
                commands.append(line)
    return commands


@pytest.mark.parametrize("command", _commands())
def test_readme_command_runs(command, tmp_path):
    argv = shlex.split(command)
    if argv[0] == "resvision":
        argv[0] = str(Path(sys.executable).with_name("resvision"))
    elif argv[0] == "python":
        argv[0] = sys.executable
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index][1], f"README.md[python block {index}]", "exec"), {})


def test_readme_backbone_table_is_current():
    from resvision.tasks.engine.table import format_table
    from resvision.tools.backbones_cmd import HEADERS, backbone_rows

    assert format_table(HEADERS, backbone_rows(), floatfmt=".2f") in README
