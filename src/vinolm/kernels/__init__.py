"""vinolm's own CPU kernel, compiled on the machine that runs it.

One so far: ``q4_1.cpp``, the matmuls of the ``q4_1`` weight format (4-bit blocks, and 8-bit
ones for the output layer), which multiply by int8 activations with AVX2 integer instructions
where OpenVINO's CPU plugin, without VNNI, unpacks every weight to f32 (docs/benchmarks.md
section 31). They are OpenVINO extension operations: C++ against the headers the ``openvino`` wheel ships, built once per
source and OpenVINO release with the system's C++ compiler into ``$VINOLM_HOME/kernels``
(as PyTorch builds its C++ extensions), so vinolm's wheel stays pure Python and the kernel
always matches the OpenVINO it is loaded into.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from vinolm.cpu import cpu_flags
from vinolm.errors import EngineError

#: The weight format whose matmuls this kernel runs, and the version of its blocks' layout in the
#: IR, recorded in ``vinolm.json``: 2 added the 8-bit output layer and ordered the scales by the
#: kernel's lanes, 3 interleaved a Q4_1 block's rows by four elements, 4 made a fused export's
#: gated MLPs one operation, 5 moved those operations' blocks into their bodies and made a square
#: matmul and the residual added to it one operation (exports of older layouts would multiply
#: wrongly, run slower or not load, so they are refused and ``prepare`` makes them again).
Q4_1 = "q4_1"
KERNEL_LAYOUT = 5
SOURCE = Path(__file__).with_name("q4_1.cpp")
#: What the kernel's instructions need (vpmaddubsw/vpermps, FMA, f16 scales).
CPU_FLAGS = frozenset({"avx2", "fma", "f16c"})
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-mavx2", "-mfma", "-mf16c",
         # what OpenVINO's own CMake package gives a consumer: its threading (TBB) and C++ ABI
         "-DOV_THREAD=OV_THREAD_TBB_ADAPTIVE", "-D_GLIBCXX_USE_CXX11_ABI=1")


def extensions_for(info: dict[str, Any]) -> list[str]:
    """The extension libraries an export (its ``vinolm.json``) needs loaded: built here if needed."""
    if info.get("weight_format") != Q4_1:
        return []
    if info.get("kernel_layout") != KERNEL_LAYOUT:
        raise EngineError("this q4_1 export was made by an older vinolm, in a layout this kernel no longer runs: "
                          "export it again (vinolm export --force; vinolm prepare does it for a model in its cache)")
    return [str(library())]


def folder_extensions(folder: str | Path) -> list[str]:
    """``extensions_for`` the export in ``folder`` (none for a folder without a record)."""
    from vinolm.export import read_record

    return extensions_for(read_record(Path(folder)))


def genai_properties(paths: list[str]) -> dict[str, Any]:
    """openvino-genai's property that loads extension libraries into the Core its pipelines read with."""
    return {"extensions": paths} if paths else {}


def add_to_cores(cores: list[Any], paths: list[str]) -> None:
    for core in cores:
        for path in paths:
            core.add_extension(path)


def add_to_optimum(paths: list[str]) -> None:
    """optimum-intel reads and compiles models with module-level Cores of its own."""
    if paths:
        from optimum.intel.openvino import modeling_base, modeling_decoder  # type: ignore[import-untyped]

        add_to_cores([modeling_base.core, modeling_decoder.core], paths)


def missing_cpu_features(flags: set[str] | None = None) -> list[str]:
    """The instructions the kernel needs that this CPU lacks (none on any x86 CPU since 2013-2015)."""
    flags = cpu_flags(obey_cap=False) if flags is None else flags
    return sorted(CPU_FLAGS - flags)


def unusable() -> str | None:
    """Why the kernel cannot run here, or None when it can (then it is built, once, now): a
    default of the q4_1 format falls back to one OpenVINO runs alone instead of failing."""
    try:
        library()
    except EngineError as error:
        return str(error)
    return None


def library() -> Path:
    """The compiled kernel for this OpenVINO release, built (once, atomically) if missing."""
    import openvino as ov

    if missing := missing_cpu_features():
        raise EngineError(f"the q4_1 weight format's kernel needs {', '.join(missing).upper()}, which this CPU "
                          "lacks: export the model with --weight-format int8 or int4")
    if not sys.platform.startswith("linux"):
        raise EngineError("the q4_1 weight format's kernel is built for Linux only: export the model with "
                          "--weight-format int8 or int4")
    root = Path(ov.__file__).parent
    key = hashlib.sha256(SOURCE.read_bytes() + ov.get_version().encode() + " ".join(FLAGS).encode()).hexdigest()
    from vinolm.models import vinolm_home

    target = vinolm_home() / "kernels" / key[:16] / "libvinolm_q4_1.so"
    if not target.is_file():
        _build(root, target)
    return target


def _build(root: Path, target: Path) -> None:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not compiler or not shutil.which(compiler):
        raise EngineError("the q4_1 weight format's kernel is compiled on first use and needs a C++ compiler "
                          f"({compiler or 'g++'} was not found): install one (apt install g++) or set CXX")
    libs = root / "libs"
    runtime = sorted(libs.glob("libopenvino.so.*"))
    tbb = sorted(libs.glob("libtbb.so.*"))
    if not runtime or not tbb or not (root / "include" / "openvino").is_dir():
        raise EngineError(f"the openvino package at {root} has no headers or libraries to build the q4_1 kernel "
                          "against (it is the PyPI wheel's layout vinolm builds with)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, *FLAGS, f"-I{root / 'include'}", str(SOURCE), "-o", tmp, f"-L{libs}",
           f"-l:{runtime[0].name}", f"-l:{tbb[0].name}", f"-Wl,-rpath,{libs}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            first = next((line for line in lines if "error" in line), lines[-1] if lines else done.returncode)
            raise EngineError(f"building the q4_1 kernel with {compiler} failed: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
