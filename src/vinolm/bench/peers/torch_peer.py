"""Peer: transformers on PyTorch in FP32, from the same GGUF file llama.cpp runs.

    python -m vinolm.bench.peers.torch_peer --model PATH.gguf --prompt-tokens 990 \\
        --new-tokens 128 --runs 5

transformers dequantizes the GGUF (``gguf_file=``) into an FP32 model, so the weights are
the ones every other peer starts from; this is the "no OpenVINO at all" baseline, the
plain ``generate`` a first script would use (SDPA attention, torch's default threads).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vinolm.bench.peers.hf_generate import main_for

PEER = "transformers PyTorch FP32"


def load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    return model, tokenizer, f"transformers {transformers.__version__}, torch {torch.__version__}"


if __name__ == "__main__":
    main_for(
        PEER, ("torch", "transformers", "gguf"), load, __doc__, "python -m vinolm.bench.peers.torch_peer"
    )
