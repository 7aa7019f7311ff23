"""Every command and Python block the README and the docs pages show runs, and every link
resolves (the docs cannot drift).

`bash` and `python` blocks run as written; `sh` and `py` blocks are shown, not run (they need
your data or a trained run)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PAGES = {
    path.relative_to(REPO).as_posix(): path.read_text()
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
}
BLOCKS = {name: re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S) for name, text in PAGES.items()}
BACKBONES_PAGE = "docs/backbones.md"  # the page that holds the registered-backbones table


def _commands() -> list:
    commands = []
    for name, blocks in BLOCKS.items():
        for lang, body in blocks:
            if lang != "bash":
                continue
            for line in body.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith(("resvision ", "python -m resvision")):
                    commands.append(pytest.param(line, id=f"{name}: {line}"))
    return commands


def _python_blocks() -> list:
    params = []
    for name, blocks in BLOCKS.items():
        bodies = [body for lang, body in blocks if lang == "python"]
        params += [
            pytest.param(name, i, body, id=f"{name}: python block {i}")
            for i, body in enumerate(bodies)
        ]
    return params


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


@pytest.mark.parametrize(("page", "index", "body"), _python_blocks())
def test_readme_python_block_runs(page, index, body, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(body, f"{page}[python block {index}]", "exec"), {})


def test_readme_backbone_table_is_current():
    from resvision.tasks.engine.table import format_table
    from resvision.tools.backbones_cmd import HEADERS, backbone_rows

    assert format_table(HEADERS, backbone_rows(), floatfmt=".2f") in PAGES[BACKBONES_PAGE]


def _prose(text: str) -> str:
    """The text outside fenced blocks and inline code (where a link is a link)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats
    numbered."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", _prose_keep_headings(text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def _prose_keep_headings(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _broken_links(page: str) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(PAGES[page])):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (REPO / page).parent / path if path else REPO / page
        if not file.exists():
            broken.append(f"{target}: {file.relative_to(REPO)} does not exist")
        elif anchor and (file.suffix != ".md" or anchor not in _anchors(file.read_text())):
            broken.append(f"{target}: {file.relative_to(REPO)} has no heading with that anchor")
    return broken


@pytest.mark.parametrize("page", list(PAGES))
def test_docs_links_resolve(page):
    """Every relative link of the README and of docs/*.md names a file that exists, and each
    anchor a heading of that file."""
    assert not _broken_links(page), f"{page}: " + "; ".join(_broken_links(page))


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        target.partition("#")[0]
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(PAGES["README.md"]))
    }
    pages = {name for name in PAGES if name.startswith("docs/")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"
