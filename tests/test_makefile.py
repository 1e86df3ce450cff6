"""`make install` and the README's install block name the same torch and index.

CI's machine reaches only its package index, so the Makefile takes torch from pip's
default index; the README's CPU index is one `TORCH_INDEX=` away. `make -n -B` prints
the recipe without running it, so these tests install nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_TORCH = re.compile(r"pip install torch==(\S+) --index-url (\S+)")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _torch_install_line(*overrides: str) -> str:
    """The recipe line of `make install` that installs torch, as make would run it."""
    out = subprocess.run(
        ["make", "-n", "-B", "install", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if re.search(r"pip install .*\btorch==", line)]
    assert len(lines) == 1, out
    return lines[0]


def _readme_torch() -> tuple[str, str]:
    """(version, index URL) of the README's `pip install torch==... --index-url ...`."""
    found = README_TORCH.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(found) == 1, found
    return found[0]


def test_default_install_uses_pip_default_index():
    line = _torch_install_line()
    assert "--index-url" not in line, line
    version, _ = _readme_torch()
    assert f'"torch=={version}"' in line, (line, version)


def test_torch_index_selects_the_index():
    line = _torch_install_line("TORCH_INDEX=https://example.invalid/whl/cpu")
    assert line.endswith('--index-url "https://example.invalid/whl/cpu"'), line


def test_readme_documents_torch_index_with_its_own_url():
    _, url = _readme_torch()
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"make install TORCH_INDEX={url}" in text
