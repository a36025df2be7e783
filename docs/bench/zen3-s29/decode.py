"""../zen3-s28/decode.py on the export folder named by F (not the one `prepare` makes): for A/B runs of two
layouts, each with its kernel build (withlib.py)."""
import dataclasses, json, os, runpy
from pathlib import Path
import vinolm.models as models

folder, prepare = Path(os.environ["F"]), models.prepare
models.prepare = lambda *a, **kw: dataclasses.replace(prepare(*a, **kw), path=folder,
                                                      info=json.loads((folder / "vinolm.json").read_text()))
runpy.run_path(str(Path(__file__).parent.parent / "zen3-s28" / "decode.py"), run_name="__main__")
