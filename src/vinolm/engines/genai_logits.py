"""A q4_1 export as openvino-genai's paged pipelines should run it: logits only for the rows they sample.

genai puts a Gather before a model's output layer when that layer is an OpenVINO ``MatMul``,
fed by an input of its own (``sampled_tokens_indices``: the rows it samples from, the last one
of a prompt), so a prompt's pass makes one row of logits. A q4_1 export's output layer is
vinolm's ``Q8MatMul``, which genai does not look for: its prompt passes made logits for every
row (a 990-token prompt: ~0.5 s of ~2.3 s on a Zen 3; a server's batched prompts, all of
theirs), found by counting the rows the kernel was given. ``Q8MatMul`` takes the same indices
as an optional third input; this module writes, once per export, a folder under
``$VINOLM_HOME/genai`` whose ``openvino_model.xml`` wires genai's input to it, with every other
file linked (the weights are not copied). genai's model runner fills the input because the
model has it; its stateful (SDPA) pipeline would not, so only paged pipelines load the folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

#: genai's name for the input it fills with the rows it samples.
SAMPLED_ROWS = "sampled_tokens_indices"
MODEL_XML = "openvino_model.xml"


def sampled_rows_folder(folder: Path) -> Path:
    """The folder genai's paged pipelines load for the export in ``folder``: ``folder`` itself
    unless its output layer is vinolm's ``Q8MatMul``, else a linked copy whose model takes
    genai's row indices (written on first use, atomically)."""
    from vinolm.models import vinolm_home

    source = (folder / MODEL_XML).read_bytes()
    key = hashlib.sha256(str(folder.resolve()).encode() + source).hexdigest()[:16]
    target = vinolm_home() / "genai" / key
    if (target / MODEL_XML).is_file():  # written by an earlier load: no need to parse the IR again
        return target
    rewritten = _with_sampled_rows(source)
    if rewritten is None:
        return folder
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        for entry in folder.resolve().iterdir():
            if entry.name != MODEL_XML:
                (tmp / entry.name).symlink_to(entry)
        (tmp / MODEL_XML).write_bytes(rewritten)
        try:
            os.replace(tmp, target)
        except OSError:  # another process wrote it first
            if not (target / MODEL_XML).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _with_sampled_rows(xml: bytes) -> bytes | None:
    """The IR with a ``sampled_tokens_indices`` Parameter as its one ``Q8MatMul``'s third
    input; None where it has no such operation (or has it already)."""
    root = ET.fromstring(xml)
    layers, edges = root.find("layers"), root.find("edges")
    if layers is None or edges is None:
        return None
    heads = [layer for layer in layers if layer.get("type") == "Q8MatMul"]
    if len(heads) != 1 or any(port.get("names") == SAMPLED_ROWS for port in root.iter("port")):
        return None
    head, head_id = heads[0], heads[0].get("id")
    inputs, outputs = head.find("input"), head.find("output")
    if inputs is None or outputs is None or len(inputs) != 2:
        return None
    param_id = str(max(int(layer.get("id", 0)) for layer in layers) + 1)
    param = ET.SubElement(layers, "layer", id=param_id, name=SAMPLED_ROWS, type="Parameter", version="opset1")
    ET.SubElement(param, "data", shape="?", element_type="i64")
    ET.SubElement(ET.SubElement(ET.SubElement(param, "output"), "port", id="0", precision="I64", names=SAMPLED_ROWS),
                  "dim").text = "-1"
    # A layer numbers its ports inputs first: the new input takes the output's number, the output the next.
    new_port = str(len(inputs))
    for port in outputs:
        old = port.get("id")
        port.set("id", str(int(old or 0) + 1))
        for edge in edges:
            if edge.get("from-layer") == head_id and edge.get("from-port") == old:
                edge.set("from-port", port.get("id", ""))
        dims = port.findall("dim")
        if dims:
            dims[0].text = "-1"  # as many rows as genai samples
    ET.SubElement(ET.SubElement(inputs, "port", id=new_port, precision="I64"), "dim").text = "-1"
    ET.SubElement(edges, "edge", {"from-layer": param_id, "from-port": "0", "to-layer": head_id or "",
                                  "to-port": new_port})
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
