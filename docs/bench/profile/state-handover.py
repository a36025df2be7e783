"""What handing the KV state between two compiled models costs (seventeenth session, Intel Xeon with AMX).

A one-token step model (``static-decode.py``) holds a state of its own: a prompt prefilled by
the dynamic model must be handed to it, and back for the next prompt of a conversation.
``hand_over`` is the native engine's (its hybrid mode hands a bf16 prompt's state to the f32
step model the same way).

    python state-handover.py
"""

import statistics
import time
from pathlib import Path

import numpy as np
import openvino as ov

from vinolm.engines.native_model import _state_pairs, hand_over
from vinolm.engines.ovconfig import compile_properties

XML = Path("~/.cache/vinolm/models/smollm2-135m/int8/openvino_model.xml").expanduser()


def main() -> None:
    core, props = ov.Core(), compile_properties("CPU", {}, None)
    model = core.read_model(XML)
    step = model.clone()
    step.reshape({"input_ids": [1, 1], "position_ids": [1, 1], "attention_mask": [1, -1], "beam_idx": [1]})
    dynamic = core.compile_model(model, "CPU", props).create_infer_request()
    static = core.compile_model(step, "CPU", props).create_infer_request()
    for n in (704, 2048):
        dynamic.reset_state()
        dynamic.infer({"input_ids": np.arange(100, 100 + n)[None], "attention_mask": np.ones((1, n), np.int64),
                       "position_ids": np.arange(n)[None], "beam_idx": np.zeros(1, np.int32)})
        there, back = _state_pairs(dynamic, static), _state_pairs(static, dynamic)
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(5):
            for pairs, spent in ((there, times[0]), (back, times[1])):
                started = time.perf_counter()
                hand_over(pairs)
                spent.append(time.perf_counter() - started)
        print(f"{n} tokens: to the step model {statistics.median(times[0]) * 1e3:.1f} ms, "
              f"back {statistics.median(times[1]) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
