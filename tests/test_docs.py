"""Every ```python block of README.md and of docs/**/*.md runs, each on its own, as a reader would run it.

Each block is executed alone, in fresh globals and in an empty working directory, so no block relies
on another one or on a file left behind. A block that is only an include of an example
(``--8<-- "examples/..."``, shown by the docs site) is checked to name a file that the tests run from
``examples/`` (multi-process examples run there, under torchrun).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r'^--8<-- "([^"]+)"$')
# Examples the docs include rather than run in-process, and the test that runs each one.
EXAMPLES_RUN_ELSEWHERE = {
    "examples/vocab_parallel.py": "tests/distributed/test_example.py",
    "examples/train_classifier.py": "tests/test_examples.py",
}


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text, with the line each starts on."""
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)
    ]


def _blocks() -> list[pytest.param]:
    params = []
    for path in documents():
        for line, code in python_blocks(path.read_text()):
            name = f"{path.relative_to(ROOT)}:{line}"
            params.append(pytest.param(name, code, id=name))
    return params


def _needs_triton(code: str) -> str | None:
    if 'impl="triton"' not in code and "impl='triton'" not in code:
        return None
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return "needs CUDA or TRITON_INTERPRET=1"
    return None


def test_every_document_is_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in documents()}
    assert {"README.md", "docs/index.md", "docs/guide/losses.md", "docs/guide/fused.md"} <= names
    assert len(_blocks()) >= 20


def test_python_blocks_are_found_and_a_failing_one_fails() -> None:
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\nraise ValueError\n```\n"
    blocks = python_blocks(text)
    assert [code for _, code in blocks] == ["x = 1\n", "raise ValueError\n"]
    with pytest.raises(ValueError):
        exec(compile(blocks[1][1], "doc", "exec"), {})


@pytest.mark.parametrize(("name", "code"), _blocks())
def test_python_block_runs(name: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    include = INCLUDE.match(code.strip())
    if include is not None:
        example = include.group(1)
        assert (ROOT / example).is_file(), f"{name} includes a missing file {example}"
        assert example in EXAMPLES_RUN_ELSEWHERE, f"{name} includes {example}, which no test runs"
        assert example in (ROOT / EXAMPLES_RUN_ELSEWHERE[example]).read_text()
        return
    reason = _needs_triton(code)
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(code, name, "exec"), {"__name__": "__main__"})


def test_docstrings_render_as_markdown_on_the_site(monkeypatch: pytest.MonkeyPatch) -> None:
    """The site's Griffe extension: ``Example:`` becomes an examples section, reST tables Markdown tables."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    from griffe_docstrings import rendered

    text = "Sum.\n\nShape:\n    =====  ==\n    input  ``(N, C)``\n    =====  ==\n\nExample:\n    >>> 1 + 1\n    2\n"
    assert rendered(text) == (
        "Sum.\n\nShape:\n    |   |   |\n    |---|---|\n    | input | ``(N, C)`` |\n\nExamples:\n    >>> 1 + 1\n    2\n"
    )
    assert rendered("See :func:`crossent.nll_loss`.") == "See `crossent.nll_loss`."


def test_readme_opens_with_the_name_a_paragraph_and_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert readme.startswith("# crossent\n\n")
    first_block = re.search(r"^```(\w+)\n(.*?)^```$", readme, flags=re.S | re.M)
    assert first_block is not None and first_block.group(1) == "bash"
    commands = [line.split("#")[0].strip() for line in first_block.group(2).splitlines()]
    assert commands == ["make demo", "make test"]
    before = readme[: first_block.start()].split("\n\n")
    assert len(before) == 3, "the name and one paragraph come first"  # heading, paragraph, the fence's blank
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _nav_pages(entries: object) -> list[str]:
    if isinstance(entries, str):
        return [entries]
    if isinstance(entries, list):
        return [page for entry in entries for page in _nav_pages(entry)]
    if isinstance(entries, dict):
        return [page for value in entries.values() for page in _nav_pages(value)]
    return []


def test_every_page_is_in_the_site_navigation() -> None:
    yaml = pytest.importorskip("yaml")
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").glob("**/*.md")}
    assert pages - set(nav) == set(), "add these pages to mkdocs.yml's nav"
    assert set(nav) - pages == set()
