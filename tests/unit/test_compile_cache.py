"""vinolm's OpenVINO model cache stays under its cap, by last use, and only vinolm's own."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vinolm.engines import compile_cache
from vinolm.errors import InvalidRequest


def blob(folder: Path, name: str, size: int, used: float) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * size)
    os.utime(path, (used, used))
    return path


def test_prune_drops_the_least_recently_used_until_under_the_cap_but_keeps_the_last(tmp_path: Path) -> None:
    old, read_lately, new = (blob(tmp_path, f"{n}.blob", 100, t) for n, t in (("a", 1e9), ("b", 2e9), ("c", 3e9)))
    os.utime(read_lately, (4e9, 2e9))  # written second, read last: kept before ``new``
    assert compile_cache.prune(tmp_path, 250) == [old]
    assert compile_cache.prune(tmp_path, 150) == [new]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.blob"]
    assert compile_cache.prune(tmp_path, 0) == [] and read_lately.exists()  # the one used last stays


def test_the_blobs_of_the_last_load_stay_together(tmp_path: Path) -> None:
    """A load may compile two models (the native engine's hybrid variants): a cap too small
    for both keeps both, not the newer alone (the other would be compiled again on every
    start)."""
    older = blob(tmp_path, "older.blob", 100, 1e9)
    decode = blob(tmp_path, "decode.blob", 100, 2e9)
    prefill = blob(tmp_path, "prefill.blob", 100, 2e9 + compile_cache.LOAD_S / 10)
    assert compile_cache.prune(tmp_path, 0) == [older] and decode.exists() and prefill.exists()


def test_a_blob_still_being_written_is_not_pruned(tmp_path: Path) -> None:
    now = time.time()
    writing = blob(tmp_path, "writing.blob", 100, now - 2 * compile_cache.LOAD_S)  # writable, written to lately
    read_lately = finished(blob(tmp_path, "read.blob", 100, now - 7200))
    os.utime(read_lately, (now, now - 7200))
    cut_short = blob(tmp_path, "killed.blob", 100, now - 2 * compile_cache.WRITING_S)  # its writer died
    assert compile_cache.prune(tmp_path, 0) == [cut_short]
    assert writing.exists() and read_lately.exists()
    finished(writing)
    assert compile_cache.prune(tmp_path, 0) == [writing]


def test_the_cap_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    assert compile_cache.cap_bytes() == 8 * 1024**3 and compile_cache.directory() == str(tmp_path / "ov_cache")
    monkeypatch.setenv(compile_cache.ENV, "0.5")
    assert compile_cache.cap_bytes() == 512 * 1024**2
    monkeypatch.setenv(compile_cache.ENV, "0")
    assert compile_cache.directory() is None
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv(compile_cache.ENV, bad)
        with pytest.raises(InvalidRequest, match=f"VINOLM_OV_CACHE_GB must be a size in GB.*{bad!r}"):
            compile_cache.cap_bytes()


def test_only_vinolm_s_own_cache_is_pruned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    monkeypatch.setenv(compile_cache.ENV, str(150 / 1024**3))
    own, theirs = tmp_path / "ov_cache", tmp_path / "theirs"
    for folder in (own, theirs):
        folder.mkdir()
        blob(folder, "a.blob", 100, 1e9)
        blob(folder, "b.blob", 100, 2e9)
    compile_cache.make_room({"CACHE_DIR": str(theirs)})
    compile_cache.make_room({})
    assert len(list(own.iterdir())) == len(list(theirs.iterdir())) == 2
    compile_cache.make_room({"CACHE_DIR": str(own)})
    assert [p.name for p in own.iterdir()] == ["b.blob"]


def finished(path: Path) -> Path:
    """As OpenVINO leaves a blob it has written completely: read-only."""
    path.chmod(0o440)
    return path


def test_only_a_rewrite_of_a_finished_blob_is_a_verdict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    own = tmp_path / "ov_cache"
    own.mkdir()
    props = {"CACHE_DIR": str(own)}
    in_progress = blob(own, "other.blob", 50, 1e9)  # another process is still writing it
    gone = finished(blob(own, "pruned.blob", 100, 1e9))
    with compile_cache.watching_paged_loads(props, "CPU"):
        with in_progress.open("ab") as rest:  # ... and finishes it during this load
            rest.write(b"\0" * 50)
        os.utime(in_progress, (2e9, 2e9))
        finished(in_progress)
        gone.unlink()  # another process prunes one
    assert not compile_cache.summary()["paged_attention_blobs_rejected"]
    assert in_progress.exists()

    paged = finished(blob(own, "paged.blob", 100, 1e9))
    with compile_cache.watching_paged_loads(props, "CPU"):
        paged.unlink()  # OpenVINO could not import it: removed, compiled, written again
        finished(blob(own, "paged.blob", 100, 2e9))
    assert compile_cache.summary()["paged_attention_blobs_rejected"]
    assert sorted(p.name for p in own.iterdir()) == ["other.blob"]
    assert "CACHE_DIR" not in compile_cache.for_paged_attention(props, "CPU")
