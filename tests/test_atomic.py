"""``atomic``: a replaced file or folder is the old one or the new one, and replacing a
folder never deletes anything the replace did not make itself."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from relneuron_eval import atomic
from relneuron_eval.atomic import atomic_dir, atomic_write
from relneuron_eval.errors import RelNeuronError


def _tree(folder):
    return {
        str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _old_out(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("old a")
    (out / "sub" / "b.txt").write_text("old b")
    return out


def test_atomic_write_keeps_the_old_file_when_the_body_fails(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    with atomic_write(path) as handle:
        handle.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["f.txt"]


def test_folder_is_replaced_whole_and_nothing_is_left_behind(tmp_path):
    out = _old_out(tmp_path)
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("new c")
        assert _tree(out) == {"a.txt": "old a", "sub/b.txt": "old b"}  # readers: the old one
    assert _tree(out) == {"c.txt": "new c"}
    assert os.listdir(tmp_path) == ["out"]  # no backup, no temporary folder
    with pytest.raises(FileExistsError), atomic_dir(out) as tmp:
        (tmp / "d.txt").write_text("never")
    assert _tree(out) == {"c.txt": "new c"} and os.listdir(tmp_path) == ["out"]


def test_failed_body_leaves_the_old_folder(tmp_path):
    out = _old_out(tmp_path)
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("half")
        raise RuntimeError("killed")
    assert _tree(out) == {"a.txt": "old a", "sub/b.txt": "old b"}
    assert os.listdir(tmp_path) == ["out"]


def _backup_like_swap(folder, name):
    """A backup folder named as ``atomic._swap`` names them (``mkdtemp``'s random part)."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=folder))


@pytest.mark.parametrize("name", [".out.old", None])  # None: named as _swap names it
def test_a_backup_it_did_not_make_is_never_deleted(tmp_path, name):
    """Earlier versions deleted ``.out.old`` unseen; it may be the only copy of an output."""
    out = _old_out(tmp_path)
    if name is None:
        backup = _backup_like_swap(tmp_path, "out")
    else:
        backup = tmp_path / name
        backup.mkdir()
    (backup / "precious.txt").write_text("keep me")
    ran = []
    with pytest.raises(RelNeuronError) as info, atomic_dir(out, overwrite=True):
        ran.append(True)
    assert not ran  # refused before any work
    assert f"{backup} holds an earlier content" in str(info.value)
    assert "not deleted automatically" in str(info.value) and "move it back" in str(info.value)
    assert (backup / "precious.txt").read_text() == "keep me"
    assert _tree(out) == {"a.txt": "old a", "sub/b.txt": "old b"}


def test_a_sibling_folders_backup_does_not_block_this_one(tmp_path):
    """``.out.x.<random>.old`` is ``out.x``'s backup: ``out`` is replaced, it is kept."""
    out = _old_out(tmp_path)
    theirs = _backup_like_swap(tmp_path, "out.x")
    (theirs / "precious.txt").write_text("keep me")
    (tmp_path / ".out.x.old").mkdir()  # out.x's backup under the earlier versions' name
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("new c")
    assert _tree(out) == {"c.txt": "new c"}
    assert (theirs / "precious.txt").read_text() == "keep me"
    sibling = tmp_path / "out.x"
    sibling.mkdir()
    with pytest.raises(RelNeuronError, match="holds an earlier content"):
        with atomic_dir(sibling, overwrite=True):
            pass  # out.x itself is still refused: the backup is its own


def test_an_interrupted_replace_is_rolled_back(tmp_path, monkeypatch):
    """The second rename fails (disk, permissions, a kill): the old folder is put back."""
    out = _old_out(tmp_path)
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("simulated failure of the second rename")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError, match="simulated"), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("new c")
    assert _tree(out) == {"a.txt": "old a", "sub/b.txt": "old b"}
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("kind", ["file", "link"])
def test_replacing_a_file_or_link_with_a_folder_is_refused(tmp_path, kind):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "x.txt").write_text("x")
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("a file")
    else:
        out.symlink_to(target)
    with pytest.raises(RelNeuronError, match="exists and is not a folder; nothing was replaced"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "c.txt").write_text("new")
    assert out.is_symlink() if kind == "link" else out.read_text() == "a file"
    assert _tree(target) == {"x.txt": "x"}
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "out"]
