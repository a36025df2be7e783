"""A Hugging Face folder -> GGUF with llama.cpp's own converter, then its own quantizer.

    python -m vinolm.bench.peers.llama_convert --hf DIR --out DIR/gguf --quant Q4_0 --quant Q8_0
    python -m vinolm.bench.peers.llama_convert --gguf FILE.gguf --out DIR --quant Q8_0 --quant F16

``--gguf`` skips the converter: the quantizer writes a GGUF in another format from a GGUF,
its weights requantized (``--allow-requantize``). They carry the source's rounding, which does
not matter for speed, the only use: llama.cpp's prompt speed depends on its format (Q4_1, the
default model's shipped format, prompts at 0.6x Q8_0 on a Zen 3), so vinolm is compared with
every width of the same model, not only the one it ships in.

The converter is ``convert_hf_to_gguf.py`` from the llama.cpp source that ``make peers``
unpacks (``.venv-peers/src/...``, or ``$VINOLM_LLAMA_CPP_SRC``), run unmodified with its own
``gguf-py``. It recognises a BPE pre-tokenizer by hashing the token ids of a test string; the
bench shapes carry SmolLM2's tokenizer cut to the shape's vocabulary, whose ids differ, so the
hash is unknown. The pre-tokenizer itself (the regex that splits text before BPE) is SmolLM's,
so ``--pre-tokenizer smollm`` answers for an unrecognised hash - the converter's known hashes
still win - instead of editing llama.cpp. Prints one JSON line: the GGUF path per quant type.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from vinolm.bench.peers.llamacpp import LLAMA_BIN, llama_tool

SRC_ENV = "VINOLM_LLAMA_CPP_SRC"
LLAMA_SRC = LLAMA_BIN.parents[1] / "src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"


def llama_source() -> Path:
    folder = Path(os.environ.get(SRC_ENV) or LLAMA_SRC)
    if not (folder / "convert_hf_to_gguf.py").is_file():
        raise FileNotFoundError(f"{folder}/convert_hf_to_gguf.py is missing: `make peers` unpacks it "
                                f"(or set ${SRC_ENV})")
    return folder


def convert(hf: Path, out: Path, pre_tokenizer: str | None) -> None:
    """Run the converter in this process with its own modules first on the path."""
    source = llama_source()
    sys.path[:0] = [str(source), str(source / "gguf-py")]
    from conversion import base  # llama.cpp's, from the path above

    if pre_tokenizer:
        known = base.TextModel.get_vocab_base_pre

        def vocab_base_pre(self: object, tokenizer: object) -> str:
            try:
                return str(known(self, tokenizer))
            except NotImplementedError:
                return pre_tokenizer

        base.TextModel.get_vocab_base_pre = vocab_base_pre  # type: ignore[method-assign]
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", str(hf), "--outfile", str(out), "--outtype", "f16"]
    convert_hf_to_gguf.main()


def quantize(source: Path, out: Path, quant: str, threads: int, requantize: bool = False) -> None:
    flags = ["--allow-requantize"] if requantize else []
    done = subprocess.run([llama_tool("llama-quantize"), *flags, str(source), str(out), quant, str(threads)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llama-quantize {quant} failed: {done.stderr[-1500:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.peers.llama_convert", description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf", type=Path, help="a Hugging Face folder: converted to f16.gguf, then quantized")
    source.add_argument("--gguf", type=Path, help="a GGUF file: requantized to each --quant")
    p.add_argument("--out", type=Path, required=True, help="folder for f16.gguf and QUANT.gguf")
    p.add_argument("--quant", action="append", default=[], help="llama-quantize type, repeatable (Q4_0, Q8_0...)")
    p.add_argument("--pre-tokenizer", default=None, help="answer for an unrecognised BPE pre-tokenizer hash")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--convert-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.gguf and not args.quant:
        p.error("--gguf is requantized to each --quant: give at least one")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is a file, not a folder")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    f16 = args.out / "f16.gguf"
    if args.convert_only:  # the converter exits the process on some errors: keep it in a child
        convert(args.hf, f16.with_suffix(".tmp"), args.pre_tokenizer)
        f16.with_suffix(".tmp").replace(f16)
        return 0
    if args.hf and not f16.is_file():
        cmd = [sys.executable, "-m", "vinolm.bench.peers.llama_convert", "--hf", str(args.hf), "--out",
               str(args.out), "--convert-only", *(["--pre-tokenizer", args.pre_tokenizer] if args.pre_tokenizer else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not f16.is_file():
            print(json.dumps({"error": f"convert_hf_to_gguf failed: {done.stderr[-1500:]}"}), flush=True)
            return 1
    try:
        made = requantized(args.gguf or f16, args.out, args.quant, args.threads, fresh=args.gguf is None)
    except (RuntimeError, FileNotFoundError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps({**({} if args.gguf else {"f16": str(f16)}), **made}), flush=True)
    return 0


def requantized(source: Path, out: Path, quants: list[str], threads: int, fresh: bool = False) -> dict[str, str]:
    """``source`` in each of ``quants`` (made once, beside each other in ``out``); ``fresh``:
    the source is an f16 conversion, quantized for the first time."""
    paths = {}
    for quant in quants:
        target = out / f"{quant}.gguf"
        if not target.is_file():
            partial = target.with_suffix(".tmp")
            try:
                quantize(source, partial, quant, threads, requantize=not fresh)
            except RuntimeError:
                partial.unlink(missing_ok=True)  # what the quantizer wrote before it failed
                raise
            partial.replace(target)
        paths[quant] = str(target)
    return paths


if __name__ == "__main__":
    sys.exit(main())
