"""The joined GGUF file of a chunked model is hashed once, then trusted by its stamp.

A fake chunk package (it writes a few known bytes) stands in for Gemma's four wheels, so
the cache logic is checked in milliseconds: the stamp saves re-hashing ~240 MB in every
process, a changed file is hashed again, and an unwritable cache is one clear error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest

from relneuron_eval.core import embedded, models
from relneuron_eval.errors import RelNeuronError

PAYLOAD = b"GGUF stand-in bytes"


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    package = tmp_path / "site" / "fake_gguf_chunks_xyz"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "def assemble(path, overwrite=False):\n"
        f"    with open(path, 'wb') as handle:\n        handle.write({PAYLOAD!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path / "cache"))
    embedded._sha256_of.cache_clear()  # the per-process memo would hide re-hashing
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    return dataclasses.replace(models.GEMMA3, module="fake_gguf_chunks_xyz", sha256=sha)


def _count_hashes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = embedded._sha256

    def counted(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(embedded, "_sha256", counted)
    return calls


def test_joined_once_then_trusted_by_its_stamp_until_the_file_changes(chunked, monkeypatch):
    target = embedded.gguf_path(chunked)
    assert target.read_bytes() == PAYLOAD
    stamp = target.with_name(target.name + ".sha256.json")
    assert stamp.is_file()
    calls = _count_hashes(monkeypatch)
    assert embedded.gguf_path(chunked) == target and calls == []  # the stamp, no hashing
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    assert embedded.gguf_path(chunked) == target and calls == [str(target)]
    calls.clear()
    assert embedded.gguf_path(chunked) == target and calls == []  # re-stamped


def test_a_stamp_that_lies_about_other_bytes_is_not_trusted(chunked):
    target = embedded.gguf_path(chunked)
    target.write_bytes(b"other bytes of another length")  # size no longer matches the stamp
    assert embedded.gguf_path(chunked).read_bytes() == PAYLOAD  # joined again


def test_an_unwritable_cache_is_one_clear_error(chunked, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(embedded.CACHE_ENV, str(blocker))
    with pytest.raises(RelNeuronError, match=r"could not join .* point \$RELNEURON_CACHE"):
        embedded.gguf_path(chunked)
    assert blocker.read_text().startswith("a file")
