"""Helpers shared by the ONNX-to-Hugging-Face converters in this folder (convert_onnx_cross_encoder.py,
convert_onnx_t5.py): node attributes, dequantisation of int8/uint8 initializers, a float32 safetensors writer
(atomic: written under a temporary name, then renamed) and file digests. Needs numpy (onnx for `attr`'s nodes).
"""

import hashlib
import json
import os
import struct

import numpy as np
import onnx
from onnx import numpy_helper


class ConversionError(Exception):
    """A graph or tensor the conversion cannot account for."""


class GraphIndex:
    """An ONNX graph's initializers (arrays loaded on first use), nodes, and which node produces and which
    nodes consume each value."""

    def __init__(self, graph):
        self.inits = {t.name: t for t in graph.initializer}
        self.nodes = list(graph.node)
        self.producer = {}
        self.consumers = {}
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.arrays = {}

    def array(self, name):
        if name not in self.arrays:
            self.arrays[name] = numpy_helper.to_array(self.inits[name])
        return self.arrays[name]

    def constant_value(self, value):
        """The value of an initializer or a `Constant` node's output; None otherwise."""
        if value in self.inits:
            return self.array(value)
        n = self.producer.get(value)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None


def attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def dequantize(q, scale, zero_point, axis):
    """`(q - zero_point) * scale` in float32; a vector scale / zero point applies along `axis` of `q`."""
    q = q.astype(np.int32)
    zp = np.zeros((), np.int32) if zero_point is None else zero_point.astype(np.int32)
    scale = scale.astype(np.float32)
    if scale.ndim == 0 and zp.ndim == 0:
        return ((q - zp).astype(np.float32) * scale).astype(np.float32)
    if scale.ndim != 1 or zp.ndim not in (0, 1):
        raise ConversionError(f"unsupported scale shape {scale.shape} / zero point shape {zp.shape}")
    axis = axis % q.ndim
    if scale.shape[0] != q.shape[axis] or (zp.ndim == 1 and zp.shape[0] != q.shape[axis]):
        raise ConversionError(f"per-channel scale of {scale.shape[0]} does not fit axis {axis} of {q.shape}")
    shape = [1] * q.ndim
    shape[axis] = q.shape[axis]
    zp = zp.reshape(shape) if zp.ndim == 1 else zp
    return ((q - zp).astype(np.float32) * scale.reshape(shape)).astype(np.float32)


def write_safetensors(path, tensors, metadata):
    """The safetensors format: u64 little-endian header length, JSON header, raw little-endian data."""
    header = {"__metadata__": metadata}
    offset = 0
    names = sorted(tensors)
    for name in names:
        a = tensors[name]
        assert a.dtype == np.float32
        n = a.size * 4
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())
    os.replace(tmp, path)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
