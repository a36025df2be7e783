"""Rewriting an exported IR in place, for the passes that change it after the export (fusion, blocks)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_in_place(model: Any, xml: Path, tag: str) -> None:
    """Save ``model`` over the IR at ``xml``: written beside it under a hidden name, then
    renamed (.bin first), so an interrupted pass never leaves a half-written model. The
    caller keeps the buffers of any constants it made alive until this returns."""
    import openvino as ov

    tmp = xml.with_name(f".{tag}-{os.getpid()}.xml")
    ov.save_model(model, tmp, compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(tmp, xml)
