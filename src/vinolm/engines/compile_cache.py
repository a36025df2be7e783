"""vinolm's OpenVINO model cache, held under a size cap.

OpenVINO writes one blob per model, device and compile properties into ``CACHE_DIR`` and
never deletes one. Property sweeps, test suites and a few exports therefore pile up: on the
machine of 2026-12-05 the cache held 31 GB of a shared 252 GB disk, and the next export died
mid-write with OpenVINO's "basic_ios::clear: iostream error". So before each compile vinolm
removes the blobs used longest ago until its own cache fits ``VINOLM_OV_CACHE_GB``. The
blobs used last always stay, even alone over the cap: a model larger than the cap is still
compiled once, not on every start. "Last" is every blob used within ``LOAD_S`` of the newest,
the blobs one load compiles or reads together (the native engine's two variants in hybrid
mode: keeping only the newest would compile the other again on every start). A ``CACHE_DIR`` the user names
(``--ov-config CACHE_DIR=...``) is theirs and left alone.

Paged attention is the exception. The CPU plugin of OpenVINO 2026.4.1 cannot import a
compiled paged-attention model (``PagedAttentionExtension ... Runtime info k_head_size and
num_k_heads are required``), so every load of a genai pipeline read its blob, deleted it,
compiled from scratch and wrote the blob again: a 1.1B INT4 load took 1.8 s instead of
1.2 s and wrote 706 MB, on every start (docs/benchmarks.md, section 8). vinolm watches
for that rewrite and, once it has seen it, compiles paged-attention pipelines without a
cache for that OpenVINO build and device (recorded in ``$VINOLM_HOME/ov_cache.json``); a
later OpenVINO is tried afresh.

"Used" is the later of a blob's write and its last read. Linux's default ``relatime``
records a read when the previous one is over a day old, which is as fine as an LRU of
compiled models needs to be. A blob removed while another process has it open stays
readable there (POSIX unlink), so concurrent servers cannot break each other.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vinolm.errors import InvalidRequest
from vinolm.models import vinolm_home

log = logging.getLogger("vinolm.engines")

ENV = "VINOLM_OV_CACHE_GB"
#: Room for the compiled default model in every format and a few 1B-class models; a blob
#: is about the size of the model's weights.
DEFAULT_GB = 8.0
GB = 1024**3


def cap_bytes() -> int:
    """The cap from ``VINOLM_OV_CACHE_GB``; 0 turns vinolm's cache off."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return int(DEFAULT_GB * GB)
    try:
        size = float(raw)
    except ValueError:
        size = math.nan
    if not (math.isfinite(size) and size >= 0):
        raise InvalidRequest(f"{ENV} must be a size in GB (0 turns the model cache off), not {raw!r}")
    return int(size * GB)


def directory() -> str | None:
    """The folder vinolm compiles into when the user names none; None when the cap is 0."""
    return str(vinolm_home() / "ov_cache") if cap_bytes() > 0 else None


#: Blobs used within this many seconds of the newest one count as the last load's (a load
#: compiles its models back to back; a 7B model takes well under this).
LOAD_S = 300.0
#: How long a blob that is still writable counts as being written. OpenVINO makes a blob
#: read-only once it is complete; one left writable for longer was cut short (a killed
#: process) and is pruned like any other.
WRITING_S = 3600.0


def _files(folder: Path) -> list[tuple[float, int, Path, bool]]:
    """(last use, size, path, still being written) of every file in ``folder``."""
    files = []
    now = time.time()
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:  # another process pruned it first
            continue
        if path.is_file():
            writing = bool(stat.st_mode & 0o200) and abs(now - stat.st_mtime) < WRITING_S
            files.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path, writing))
    return files


def prune(folder: Path, cap: int) -> list[Path]:
    """Remove the files of ``folder`` used longest ago until it holds at most ``cap`` bytes
    or only the last load's are left (``LOAD_S``). A blob another process is still writing
    stays: when done, OpenVINO checks that the blob is there and makes it read-only by name,
    and on a removed file it throws and that process's compile fails."""
    files = _files(folder)
    total = sum(size for _, size, _, _ in files)
    last = max((used for used, _, _, _ in files), default=0.0) - LOAD_S
    removed = []
    for used, size, path, writing in sorted(files):
        if total <= cap or used >= last:
            break
        if writing:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def _own(properties: dict[str, Any]) -> Path | None:
    """vinolm's cache folder, if ``properties`` compile into it (not into one the user named)."""
    own = directory()
    return Path(own) if own is not None and properties.get("CACHE_DIR") == own else None


def make_room(properties: dict[str, Any]) -> None:
    """Prune vinolm's own cache before a compile with ``properties`` adds to it."""
    own = _own(properties)
    if own is None or not own.is_dir():
        return
    if removed := prune(own, cap := cap_bytes()):
        log.info("removed %d compiled models used longest ago from %s (%s: %g GB)", len(removed), own, ENV,
                 cap / GB)


def _rejections_file() -> Path:
    return vinolm_home() / "ov_cache.json"


def openvino_build(device: str) -> str:
    """What a paged-attention verdict holds for: this OpenVINO build's plugin for ``device``."""
    import openvino as ov

    return f"{ov.get_version()} {device}"


def _verdicts() -> dict[str, Any]:
    try:
        return dict(json.loads(_rejections_file().read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _paged_blobs_rejected(device: str) -> bool:
    return openvino_build(device) in _verdicts().get("paged_attention_blobs_rejected", [])


def _record_paged_rejection(device: str) -> None:
    path, record = _rejections_file(), _verdicts()
    builds = record.setdefault("paged_attention_blobs_rejected", [])
    if openvino_build(device) not in builds:
        builds.append(openvino_build(device))
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only home: the next load finds out again
        tmp.unlink(missing_ok=True)
        log.warning("cannot record in %s that OpenVINO rejects paged-attention blobs: %s", path, exc)
        return
    log.info("OpenVINO %s cannot import compiled paged-attention models: genai pipelines compile "
             "without a cache from now on (recorded in %s)", openvino_build(device), path)


def for_paged_attention(properties: dict[str, Any], device: str) -> dict[str, Any]:
    """``properties`` for a paged-attention pipeline: without vinolm's own cache where this
    OpenVINO was seen rejecting such blobs."""
    if _own(properties) is None or not _paged_blobs_rejected(device):
        return properties
    return {k: v for k, v in properties.items() if k != "CACHE_DIR"}


def _finished_blobs(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of the blobs OpenVINO has finished writing. It writes a blob under its
    final name and makes it read-only once complete, so a blob another process is still
    writing keeps its write bit and is left out: its completion is not a rewrite."""
    stamps = {}
    for path in folder.glob("*.blob"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if not stat.st_mode & 0o200:
            stamps[path.name] = (stat.st_ino, stat.st_mtime_ns)
    return stamps


@contextmanager
def watching_paged_loads(properties: dict[str, Any], device: str) -> Iterator[None]:
    """Around a paged-attention pipeline's load: a blob that was there before and has been
    written again means OpenVINO could not import it (a hit only reads it)."""
    own = _own(properties)
    if own is None:
        yield
        return
    before = _finished_blobs(own)
    yield
    after = _finished_blobs(own)
    if rewritten := [name for name, stamp in before.items() if after.get(name, stamp) != stamp]:
        _record_paged_rejection(device)
        for name in rewritten:  # never read again: the next loads compile without a cache
            (own / name).unlink(missing_ok=True)


def summary(device: str = "CPU") -> dict[str, Any]:
    """Where compiled models go, how much they hold and whether genai's pipelines are cached:
    what a user wondering about a slow load or a full disk looks at first."""
    own = directory()
    held = sum(size for _, size, _, _ in _files(Path(own))) if own and Path(own).is_dir() else 0
    return {"folder": own, "bytes": held, "cap_bytes": cap_bytes(),
            "paged_attention_blobs_rejected": _paged_blobs_rejected(device)}
