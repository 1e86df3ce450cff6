"""Packaging: lazy start-up hook, wheel contents, and the wheel working without the repo."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

HEAVY = ("torch", "transformers", "lm_eval", "numpy", "datasets")


def _imported_modules(code: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Top-level modules imported by ``python -X importtime -c code``, with self-time (us)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd="/",
        check=True,
    )
    out: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _cumulative, name = line.split(":", 1)[1].split("|")
        if self_us.strip().isdigit():
            out[name.strip()] = int(self_us)
    return out


def test_start_up_hook_is_installed_and_imports_nothing_heavy():
    modules = _imported_modules("pass")
    assert "relneuron_eval._hook" in modules, "the .pth start-up hook is not installed"
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    assert heavy == [], f"python -c pass imported {heavy}"
    ours = [m for m in modules if m.startswith("relneuron_eval")]
    assert sorted(ours) == ["relneuron_eval", "relneuron_eval._hook"]


@pytest.mark.slow  # lm_eval / relneuron subprocesses: ~10 CPU s
def test_hook_registers_model_and_tasks_when_lm_eval_loads():
    code = (
        "from lm_eval.api.registry import get_model\n"
        "import lm_eval.tasks.manager as m, inspect\n"
        "print(get_model('relneuron-hf').__name__)\n"
        "print(getattr(m.TaskManager.__init__, '_relneuron_wrapped', False))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert proc.stdout.split() == ["RelNeuronLM", "True"]
    off = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "RELNEURON_EVAL_NO_AUTOLOAD": "1"},
    )
    assert off.returncode != 0 and "relneuron-hf" in off.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
    )
    (path,) = out.glob("relneuron_eval-*.whl")
    return path


def test_wheel_carries_tasks_neuron_sets_hook_and_entry_points(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(
            zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    assert "relneuron_eval.pth" in names
    for folder in ("tasks", "neuron_sets"):
        shipped = {
            str(p.relative_to(REPO)).replace(os.sep, "/")
            for p in (REPO / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        in_wheel = {
            n.removeprefix("relneuron_eval/_data/")
            for n in names
            if n.startswith(f"relneuron_eval/_data/{folder}/")
        }
        assert shipped and shipped <= in_wheel, sorted(shipped - in_wheel)[:5]
    assert "[lm_eval.models]" in entry_points and "relneuron-hf" in entry_points
    assert "[lm_eval.tasks]" in entry_points
    assert "relneuron = relneuron_eval.cli:main" in entry_points


def test_installed_wheel_works_without_the_source_tree(wheel, tmp_path):
    """Unpack the wheel into a fresh site dir (its .pth processed) and use it from '/'."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    import sysconfig

    code = (
        "import site, sys\n"
        # site-packages WITHOUT processing its .pth files (the editable checkout's hook)
        f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
        f"site.addsitedir({str(target)!r})\n"
        "import relneuron_eval, relneuron_eval.resources as r\n"
        "from lm_eval.api.registry import get_model\n"
        "print(relneuron_eval.__file__)\n"
        "print(r.tasks_dir())\n"
        "print(r.neuron_sets_dir())\n"
        "print(get_model('relneuron-hf').__module__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd="/"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    package_file, tasks, neuron_sets, model_module = proc.stdout.split()
    assert package_file.startswith(str(target))
    assert tasks.startswith(str(target)) and any(Path(tasks).rglob("*.yaml"))
    assert neuron_sets.startswith(str(target))
    assert model_module == "relneuron_eval.harness.lm_model"
