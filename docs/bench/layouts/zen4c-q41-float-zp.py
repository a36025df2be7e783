import numpy as np, openvino as ov
from openvino import opset13 as ops
core = ov.Core()
m = core.read_model("i4a32/openvino_model.xml")
n = 0
for op in m.get_ordered_ops():
    if op.get_type_name() != "Subtract":
        continue
    src = op.input_value(1).get_node()
    if src.get_type_name() != "Convert":
        continue
    c = src.input_value(0).get_node()
    if c.get_type_name() != "Constant" or c.get_element_type() != ov.Type.u4:
        continue
    raw = np.frombuffer(c.get_data().tobytes(), dtype=np.uint8)
    vals = np.stack([raw & 15, raw >> 4], -1).reshape(-1)[: int(np.prod(list(c.get_shape())))]
    zp = vals.reshape(list(c.get_shape())).astype(np.float32) + 0.37
    new = ops.constant(zp.astype(np.float16))
    op.input(1).replace_source_output(new.output(0))
    n += 1
print("replaced", n)
ov.save_model(m, "i4a32f/openvino_model.xml")
