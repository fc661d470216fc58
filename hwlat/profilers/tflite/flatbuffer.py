"""A `TFLiteGraph` written as a `.tflite` FlatBuffer with the `flatbuffers` package (no TensorFlow).

FlatBuffer field ids (vtable slot = field index, in declaration order) and enum values are from
TFLite's schema, tensorflow/lite/schema/schema.fbs (github.com/tensorflow/tensorflow; the same file
ships with LiteRT): Model{version 0, operator_codes 1, subgraphs 2, description 3, buffers 4},
SubGraph{tensors 0, inputs 1, outputs 2, operators 3, name 4}, Tensor{shape 0, type 1, buffer 2,
name 3, quantization 4}, QuantizationParameters{min 0, max 1, scale 2, zero_point 3, details_type 4,
details 5, quantized_dimension 6}, Operator{opcode_index 0, inputs 1, outputs 2,
builtin_options_type 3, builtin_options 4}, OperatorCode{deprecated_builtin_code 0 (byte),
custom_code 1, version 2, builtin_code 3 (int)}, Buffer{data 0}; file identifier "TFL3".

The builder writes back to front, so the order of the writing steps in `serialize` fixes the bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwlat.profilers.tflite.graph import Op, Tensor, TFLiteGraph

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

# enum BuiltinOperator (schema.fbs).
BUILTIN_CODES = {
    "ADD": 0, "AVERAGE_POOL_2D": 1, "CONCATENATION": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4,
    "FULLY_CONNECTED": 9, "LOGISTIC": 14, "MAX_POOL_2D": 17, "MUL": 18, "RELU": 19, "RELU6": 21, "RESHAPE": 22,
    "SOFTMAX": 25, "PAD": 34, "GATHER": 36, "TRANSPOSE": 39, "MEAN": 40, "SUB": 41, "SPLIT": 49, "PADV2": 60, "SLICE": 65,
    "RSQRT": 76, "SQUARED_DIFFERENCE": 99, "HARD_SWISH": 117, "BATCH_MATMUL": 126, "GELU": 150,
}
# OperatorCode.deprecated_builtin_code is a byte: codes above 126 store 127
# (PLACEHOLDER_FOR_GREATER_OP_CODES) there and the real code in builtin_code.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# enum TensorType.
TENSOR_TYPES = {"float32": 0, "int32": 2, "int8": 9}
# The little-endian numpy type each TensorType's buffer holds.
BUFFER_DTYPES = {"float32": "<f4", "int8": "i1", "int32": "<i4"}
# enum ActivationFunctionType.
ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 3}
# enum Padding.
PADDINGS = {"SAME": 0, "VALID": 1}
# union BuiltinOptions: the type index of each options table, and the table written per op.
OPTIONS_TYPE = {
    "Conv2DOptions": 1, "DepthwiseConv2DOptions": 2, "Pool2DOptions": 5, "FullyConnectedOptions": 8,
    "ConcatenationOptions": 10, "AddOptions": 11, "MulOptions": 21, "PadOptions": 22, "ReducerOptions": 27,
    "PadV2Options": 43, "HardSwishOptions": 91, "SoftmaxOptions": 9, "GatherOptions": 23, "TransposeOptions": 26,
    "SubOptions": 28, "SplitOptions": 35, "SliceOptions": 48, "SquaredDifferenceOptions": 76, "BatchMatMulOptions": 101, "GeluOptions": 116,
}
OP_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions", "FULLY_CONNECTED": "FullyConnectedOptions", "CONCATENATION": "ConcatenationOptions",
    "ADD": "AddOptions", "MUL": "MulOptions", "PAD": "PadOptions", "PADV2": "PadV2Options", "MEAN": "ReducerOptions",
    "HARD_SWISH": "HardSwishOptions", "SOFTMAX": "SoftmaxOptions", "GATHER": "GatherOptions",
    "TRANSPOSE": "TransposeOptions", "SUB": "SubOptions", "SPLIT": "SplitOptions", "SLICE": "SliceOptions",
    "SQUARED_DIFFERENCE": "SquaredDifferenceOptions", "BATCH_MATMUL": "BatchMatMulOptions", "GELU": "GeluOptions",
}
# Operator versions the converter writes for int8 kernels (lite/tools/versioning/op_version.cc);
# LiteRT's builtin resolver maps every version to the same kernel, so these only document intent.
INT8_OP_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "HARD_SWISH": 1, "RESHAPE": 1}


# ---- vectors -------------------------------------------------------------------------------------
def _bytes(b: Any, data: bytes, align: int = 16) -> int:
    """A [ubyte] vector aligned for the kernels that read weights in place (schema: force_align 16)."""
    b.StartVector(1, len(data), align)
    b.head -= len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def _offsets(b: Any, items: list[int]) -> int:
    b.StartVector(4, len(items), 4)
    for o in reversed(items):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _offset_slots(b: Any, first: int, offsets: list[int]) -> None:
    """Offset fields of the table being written, in slots `first`, `first` + 1, ... (in that order)."""
    for slot, offset in enumerate(offsets, start=first):
        b.PrependUOffsetTRelativeSlot(slot, offset, 0)


# ---- operator options ------------------------------------------------------------------------------
def _options(b: Any, op: Op) -> tuple[int, int]:
    """(union type, offset) of the op's builtin options table, or (0, 0) when it takes none."""
    name = OP_OPTIONS.get(op.kind)
    if name is None:
        return 0, 0
    o, act = op.options, ACTIVATIONS[op.activation]
    if name == "Conv2DOptions":  # padding 0, stride_w 1, stride_h 2, fused_activation 3, dilation_w 4, dilation_h 5
        b.StartObject(6)
        b.PrependInt8Slot(0, PADDINGS[o["padding"]], 0)
        b.PrependInt32Slot(1, o["stride"], 0)
        b.PrependInt32Slot(2, o["stride"], 0)
        b.PrependInt8Slot(3, act, 0)
        b.PrependInt32Slot(4, o["dilation"], 1)
        b.PrependInt32Slot(5, o["dilation"], 1)
    elif name == "DepthwiseConv2DOptions":  # ... depth_multiplier 3, fused_activation 4, dilation_w 5, dilation_h 6
        b.StartObject(7)
        b.PrependInt8Slot(0, PADDINGS[o["padding"]], 0)
        b.PrependInt32Slot(1, o["stride"], 0)
        b.PrependInt32Slot(2, o["stride"], 0)
        b.PrependInt32Slot(3, o["depth_multiplier"], 0)
        b.PrependInt8Slot(4, act, 0)
        b.PrependInt32Slot(5, o["dilation"], 1)
        b.PrependInt32Slot(6, o["dilation"], 1)
    elif name == "Pool2DOptions":  # padding 0, stride_w 1, stride_h 2, filter_width 3, filter_height 4, fused_activation 5
        b.StartObject(6)
        b.PrependInt8Slot(0, PADDINGS[o["padding"]], 0)
        b.PrependInt32Slot(1, o["stride"], 0)
        b.PrependInt32Slot(2, o["stride"], 0)
        b.PrependInt32Slot(3, o["filter"], 0)
        b.PrependInt32Slot(4, o["filter"], 0)
        b.PrependInt8Slot(5, act, 0)
    elif name == "FullyConnectedOptions":  # fused_activation 0, weights_format 1 (DEFAULT), keep_num_dims 2
        b.StartObject(3)
        b.PrependInt8Slot(0, act, 0)
    elif name == "ConcatenationOptions":  # axis 0, fused_activation 1
        b.StartObject(2)
        b.PrependInt32Slot(0, o["axis"], 0)
        b.PrependInt8Slot(1, act, 0)
    elif name in ("AddOptions", "MulOptions", "SubOptions"):  # fused_activation 0
        b.StartObject(1)
        b.PrependInt8Slot(0, act, 0)
    elif name == "ReducerOptions":  # keep_dims 0
        b.StartObject(1)
        b.PrependBoolSlot(0, bool(o.get("keep_dims", False)), False)
    elif name == "SoftmaxOptions":  # beta 0
        b.StartObject(1)
        b.PrependFloat32Slot(0, float(o.get("beta", 1.0)), 0.0)
    elif name == "GatherOptions":  # axis 0, batch_dims 1
        b.StartObject(2)
        b.PrependInt32Slot(0, int(o.get("axis", 0)), 0)
    elif name == "BatchMatMulOptions":  # adj_x 0, adj_y 1, asymmetric_quantize_inputs 2
        b.StartObject(3)
        b.PrependBoolSlot(1, bool(o.get("adj_y", False)), False)
    elif name == "SplitOptions":  # num_splits 0
        b.StartObject(1)
        b.PrependInt32Slot(0, int(o["num_splits"]), 0)
    elif name == "GeluOptions":  # approximate 0 (the tanh form)
        b.StartObject(1)
        b.PrependBoolSlot(0, bool(o.get("approximate", False)), False)
    else:  # PadOptions, PadV2Options, HardSwishOptions, TransposeOptions, SliceOptions, SquaredDifferenceOptions: empty
        b.StartObject(0)
    return OPTIONS_TYPE[name], b.EndObject()


def _op_version(op: Op, int8: bool) -> int:
    if int8:
        return INT8_OP_VERSIONS.get(op.kind, 2)
    if op.kind == "DEPTHWISE_CONV_2D" and op.options.get("dilation", 1) > 1:
        return 2
    return 1


# ---- the tables of a model, in the order they are written ------------------------------------------
def _write_buffers(b: Any, g: TFLiteGraph) -> tuple[list[int], dict[int, int]]:
    """The Buffer tables and, per constant tensor, its buffer index.

    Buffer 0 is the empty sentinel every non-constant tensor points at; one buffer per constant."""
    buffer_of: dict[int, int] = {}
    buffer_offsets = []
    b.StartObject(1)
    buffer_offsets.append(b.EndObject())
    for i, t in enumerate(g.tensors):
        if t.data is None:
            continue
        data = _bytes(b, np.ascontiguousarray(t.data.astype(BUFFER_DTYPES[t.dtype])).tobytes())
        b.StartObject(1)
        b.PrependUOffsetTRelativeSlot(0, data, 0)
        buffer_of[i] = len(buffer_offsets)
        buffer_offsets.append(b.EndObject())
    return buffer_offsets, buffer_of


def _write_quantization(b: Any, t: Tensor) -> int:
    """The tensor's QuantizationParameters table (0 when it has none)."""
    if t.quant is None:
        return 0
    scale = b.CreateNumpyVector(t.quant.scale.astype(np.float32))
    zp = b.CreateNumpyVector(t.quant.zero_point.astype(np.int64))
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(2, scale, 0)
    b.PrependUOffsetTRelativeSlot(3, zp, 0)
    b.PrependInt32Slot(6, t.quant.quantized_dimension, 0)
    return b.EndObject()


def _write_tensors(b: Any, g: TFLiteGraph, buffer_of: dict[int, int]) -> list[int]:
    tensor_offsets = []
    for i, t in enumerate(g.tensors):
        name = b.CreateString(t.name)
        shape = b.CreateNumpyVector(np.array(t.shape, np.int32))
        quant = _write_quantization(b, t)
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, TENSOR_TYPES[t.dtype], 0)
        b.PrependUint32Slot(2, buffer_of.get(i, 0), 0)
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        if quant:
            b.PrependUOffsetTRelativeSlot(4, quant, 0)
        tensor_offsets.append(b.EndObject())
    return tensor_offsets


def _write_operators(b: Any, g: TFLiteGraph) -> tuple[list[int], list[tuple[str, int]]]:
    """The Operator tables and the (kind, version) operator codes they index, in first-use order."""
    int8 = g.is_int8
    codes: list[tuple[str, int]] = []
    op_offsets = []
    for op in g.ops:
        key = (op.kind, _op_version(op, int8))
        if key not in codes:
            codes.append(key)
        ins = b.CreateNumpyVector(np.array(op.inputs, np.int32))
        outs = b.CreateNumpyVector(np.array(op.outputs, np.int32))
        opt_type, opt = _options(b, op)
        b.StartObject(5)
        b.PrependUint32Slot(0, codes.index(key), 0)
        b.PrependUOffsetTRelativeSlot(1, ins, 0)
        b.PrependUOffsetTRelativeSlot(2, outs, 0)
        if opt_type:
            b.PrependUint8Slot(3, opt_type, 0)
            b.PrependUOffsetTRelativeSlot(4, opt, 0)
        op_offsets.append(b.EndObject())
    return op_offsets, codes


def _write_subgraph(b: Any, g: TFLiteGraph, tensor_offsets: list[int], op_offsets: list[int]) -> int:
    tensors = _offsets(b, tensor_offsets)
    inputs = b.CreateNumpyVector(np.array(g.inputs, np.int32))
    outputs = b.CreateNumpyVector(np.array(g.outputs, np.int32))
    operators = _offsets(b, op_offsets)
    sg_name = b.CreateString("main")
    b.StartObject(5)
    _offset_slots(b, 0, [tensors, inputs, outputs, operators, sg_name])
    return b.EndObject()


def _write_operator_codes(b: Any, codes: list[tuple[str, int]]) -> list[int]:
    code_offsets = []
    for kind, version in codes:
        code = BUILTIN_CODES[kind]
        b.StartObject(4)
        # deprecated_builtin_code is a byte: min(code, 127); builtin_code holds the full value.
        b.PrependInt8Slot(0, min(code, PLACEHOLDER_FOR_GREATER_OP_CODES), 0)
        b.PrependInt32Slot(2, version, 1)
        b.PrependInt32Slot(3, code, 0)
        code_offsets.append(b.EndObject())
    return code_offsets


def _write_model(b: Any, code_offsets: list[int], subgraph: int, buffer_offsets: list[int], description: str) -> int:
    opcodes = _offsets(b, code_offsets)
    subgraphs = _offsets(b, [subgraph])
    buffers = _offsets(b, buffer_offsets)
    desc = b.CreateString(description)
    b.StartObject(5)
    b.PrependUint32Slot(0, SCHEMA_VERSION, 0)
    _offset_slots(b, 1, [opcodes, subgraphs, desc, buffers])
    return b.EndObject()


def serialize(g: TFLiteGraph, description: str = "hwlat") -> bytes:
    """The graph as a .tflite FlatBuffer (schema version 3, one subgraph, buffer 0 empty)."""
    import flatbuffers

    size = 1024 + sum(t.data.nbytes for t in g.tensors if t.data is not None)
    b = flatbuffers.Builder(size)
    buffer_offsets, buffer_of = _write_buffers(b, g)
    tensor_offsets = _write_tensors(b, g, buffer_of)
    op_offsets, codes = _write_operators(b, g)
    subgraph = _write_subgraph(b, g, tensor_offsets, op_offsets)
    code_offsets = _write_operator_codes(b, codes)
    model = _write_model(b, code_offsets, subgraph, buffer_offsets, description)
    b.Finish(model, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())
