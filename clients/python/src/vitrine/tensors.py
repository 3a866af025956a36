"""Tensors on the wire: numpy arrays to and from the API's JSON tensors and
the binary tensor body (a safetensors file), and the canonical digest the
log's leaves record (``tensors_sha256``), recomputed from one's own arrays.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import Dict, Mapping, Tuple

import numpy as np

#: The API's dtype names and their numpy dtypes (all little-endian).
DTYPES: Dict[str, np.dtype] = {
    "f32": np.dtype("<f4"),
    "f64": np.dtype("<f8"),
    "i8": np.dtype("i1"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "u8": np.dtype("u1"),
    "u16": np.dtype("<u2"),
    "u32": np.dtype("<u4"),
    "u64": np.dtype("<u8"),
    "bool": np.dtype("bool"),
    "f16": np.dtype("<f2"),
}


def _bfloat16() -> np.dtype | None:
    """numpy has no bfloat16; ml_dtypes (``pip install 'vitrine[bf16]'``) adds it."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - the tests install it
        return None
    return np.dtype(ml_dtypes.bfloat16)


if (_bf16 := _bfloat16()) is not None:
    DTYPES["bf16"] = _bf16
#: The API's float dtypes: their JSON data may hold "NaN", "Infinity", "-Infinity".
FLOATS = ("f32", "f64", "f16", "bf16")
#: The same in safetensors' spelling.
SAFETENSORS: Dict[str, str] = {
    "f32": "F32",
    "f64": "F64",
    "i8": "I8",
    "i16": "I16",
    "i32": "I32",
    "i64": "I64",
    "u8": "U8",
    "u16": "U16",
    "u32": "U32",
    "u64": "U64",
    "bool": "BOOL",
    "f16": "F16",
    "bf16": "BF16",
}
_FROM_SAFETENSORS = {v: k for k, v in SAFETENSORS.items()}


def api_dtype(array: np.ndarray) -> str:
    """The API's name of an array's dtype; ``TypeError`` for one it has not."""
    for name, dtype in DTYPES.items():
        if array.dtype == dtype:
            return name
    for name, dtype in DTYPES.items():
        # The same numbers in another byte order.
        if dtype.kind in "fiub" and array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            return name
    hint = " (bf16 needs the ml_dtypes package: pip install 'vitrine[bf16]')" if "bfloat16" in str(array.dtype) else ""
    raise TypeError(f"dtype {array.dtype} has no counterpart in the API (its dtypes: {', '.join(DTYPES)}){hint}")


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bf16" and name not in DTYPES:
        raise TypeError("the answer holds bf16 tensors: install the ml_dtypes package (pip install 'vitrine[bf16]')")
    return DTYPES[name]


def as_array(value: object) -> np.ndarray:
    """A numpy array of ``value`` (an array, a list or a number), C-ordered
    and little-endian; Python floats become f32 and ints i64 only when not
    already arrays, as numpy decides."""
    array = np.asarray(value)
    dtype = DTYPES[api_dtype(array)]
    return np.ascontiguousarray(array, dtype=dtype)


def _json_number(value: float) -> object:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def to_json(array: np.ndarray) -> dict:
    """An array as the API's JSON tensor: dtype, shape, flat row-major data
    (non-finite floats as the strings the API reads)."""
    name = api_dtype(array)
    flat = array.reshape(-1)
    if name in FLOATS:
        # float(x) of an f32, f16 or bf16 is exact, and the server reads it back exactly.
        data = [_json_number(float(x)) for x in flat]
    elif name == "bool":
        data = [bool(x) for x in flat]
    else:
        data = [int(x) for x in flat]
    return {"dtype": name, "shape": list(array.shape), "data": data}


def _float_of(value: object) -> float:
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return float(value)  # type: ignore[arg-type]


def from_json(tensor: Mapping) -> np.ndarray:
    """The API's JSON tensor as a numpy array of its exact dtype and shape."""
    name = tensor["dtype"]
    dtype = _numpy_dtype(name)
    data = tensor["data"]
    if name in FLOATS:
        data = [_float_of(x) for x in data]
    return np.array(data, dtype=dtype).reshape(tensor["shape"])


def encode_safetensors(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Arrays as a safetensors file: the binary tensor body of a request."""
    header: dict = {}
    chunks = []
    offset = 0
    for name in sorted(arrays):
        array = as_array(arrays[name])
        raw = array.tobytes()
        header[name] = {
            "dtype": SAFETENSORS[api_dtype(array)],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def decode_safetensors(body: bytes) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """A safetensors file's arrays (copies, writable) and its metadata."""
    if len(body) < 8:
        raise ValueError("a safetensors body has at least 8 bytes")
    (length,) = struct.unpack("<Q", body[:8])
    header = json.loads(body[8 : 8 + length])
    data = body[8 + length :]
    metadata = header.pop("__metadata__", {}) or {}
    arrays = {}
    for name, entry in header.items():
        dtype = _numpy_dtype(_FROM_SAFETENSORS[entry["dtype"]])
        begin, end = entry["data_offsets"]
        arrays[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(entry["shape"]).copy()
    return arrays, metadata


def tensors_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """The digest format 2 leaves record of a call's inputs or outputs (hex):
    SHA-256 over ``vitrine-tensors1``, the tensor count (u32), then per
    tensor in byte order of names: name (u16 length), dtype name (u8
    length), rank (u8), each dimension (u64), the data's byte length (u64)
    and the data, row-major, little-endian (bool: one byte, 0 or 1); all
    lengths big-endian."""
    digest = hashlib.sha256()
    digest.update(b"vitrine-tensors1")
    digest.update(struct.pack(">I", len(arrays)))
    for name in sorted(arrays, key=lambda n: n.encode()):
        array = as_array(arrays[name])
        raw = array.tobytes()
        encoded = name.encode()
        dtype = api_dtype(array).encode()
        digest.update(struct.pack(">H", len(encoded)) + encoded)
        digest.update(bytes([len(dtype)]) + dtype)
        digest.update(bytes([array.ndim]))
        for dim in array.shape:
            digest.update(struct.pack(">Q", dim))
        digest.update(struct.pack(">Q", len(raw)))
        digest.update(raw)
    return digest.hexdigest()
