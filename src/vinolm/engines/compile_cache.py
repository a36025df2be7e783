"""vinolm's OpenVINO model cache, held under a size cap.

OpenVINO writes one blob per model, device and compile properties into ``CACHE_DIR`` and
never deletes one. Property sweeps, test suites and a few exports therefore pile up: on the
machine of 2026-12-05 the cache held 31 GB of a shared 252 GB disk, and the next export died
mid-write with OpenVINO's "basic_ios::clear: iostream error". So before each compile vinolm
removes the blobs used longest ago until its own cache fits ``VINOLM_OV_CACHE_GB``.
A ``CACHE_DIR`` the user names (``--ov-config CACHE_DIR=...``) is theirs and left alone.

"Used" is the later of a blob's write and its last read. Linux's default ``relatime``
records a read when the previous one is over a day old, which is as fine as an LRU of
compiled models needs to be. A blob removed while another process has it open stays
readable there (POSIX unlink), so concurrent servers cannot break each other.
"""

from __future__ import annotations

import logging
import math
import os
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


def prune(folder: Path, cap: int) -> list[Path]:
    """Remove the files of ``folder`` used longest ago until it holds at most ``cap`` bytes."""
    files = []
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:  # another process pruned it first
            continue
        if path.is_file():
            files.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = []
    for _, size, path in sorted(files):
        if total <= cap:
            break
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def make_room(properties: dict[str, Any]) -> None:
    """Prune vinolm's own cache before a compile with ``properties`` adds to it."""
    own = directory()
    if own is None or properties.get("CACHE_DIR") != own or not Path(own).is_dir():
        return
    if removed := prune(Path(own), cap_bytes()):
        log.info("removed %d compiled models used longest ago from %s (%s: %s GB)", len(removed), own, ENV,
                 os.environ.get(ENV) or DEFAULT_GB)
