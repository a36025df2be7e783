"""Peer: optimum-intel's ``OVModelForCausalLM`` with transformers ``generate`` (the tutorials).

    python -m vinolm.bench.peers.optimum_peer --model IR_FOLDER --prompt-tokens 990 \\
        --new-tokens 128 --runs 5

Loaded exactly as the OpenVINO LLM notebooks do: latency hint, one stream, no model
cache (``ov_config`` below), then ``generate`` with a streamer on the same IR folder
vinolm runs. The difference to vinolm is transformers' Python decoding loop around the
same compiled model.
"""

from __future__ import annotations

import argparse
from typing import Any

from vinolm.bench.peers.hf_generate import main_for

PEER = "optimum-intel (tutorial path)"
TUTORIAL_OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "CACHE_DIR": ""}


def load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from importlib.metadata import version

    from optimum.intel import OVModelForCausalLM
    from transformers import AutoConfig, AutoTokenizer

    from vinolm.engines.ovconfig import cap_properties
    from vinolm.kernels import add_to_optimum, folder_extensions

    add_to_optimum(folder_extensions(args.model))
    model = OVModelForCausalLM.from_pretrained(
        args.model,
        device="CPU",
        ov_config={**TUTORIAL_OV_CONFIG, **cap_properties()},
        config=AutoConfig.from_pretrained(args.model),
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    return model, tokenizer, f"optimum-intel {version('optimum-intel')}"


if __name__ == "__main__":
    main_for(
        PEER, ("torch", "transformers", "optimum"), load, __doc__, "python -m vinolm.bench.peers.optimum_peer"
    )
