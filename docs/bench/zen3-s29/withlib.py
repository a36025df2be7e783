"""python withlib.py LIB.so module|script args...: run with vinolm's q4_1 kernel library replaced by LIB."""
import os, sys, runpy
from pathlib import Path
import vinolm.kernels as k
lib = Path(sys.argv[1]).resolve()
k.library = lambda: lib
target, sys.argv = sys.argv[2], sys.argv[2:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
