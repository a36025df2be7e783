"""python withlib.py LIB gen.py ENGINE FOLDER: greedy token ids for a few prompts (for equality checks), and timing."""
import dataclasses, json, sys, time
from pathlib import Path
from vinolm.engines import load_engine
from vinolm.engines.base import EngineOptions
from vinolm.models import prepare
from vinolm.bench.worker import request
from vinolm.bench.schema import prompt_text
engine, folder = sys.argv[1], Path(sys.argv[2])
pm = prepare("smollm2-135m", progress=lambda _: None)
pm = dataclasses.replace(pm, path=folder, info=json.loads((folder / "vinolm.json").read_text()))
eng = load_engine(engine, pm, EngineOptions())
prompts = ["What is the capital of France?", "Write a haiku about the sea.", "Explain OpenVINO in one sentence."]
prompts += [prompt_text(eng.tokenize, eng.detokenize, n, 1) for n in (32, 300)]
for p in prompts:
    ids = [t for chunk in eng.generate(request(p, 40)) for t in chunk.token_ids]
    print(ids)
