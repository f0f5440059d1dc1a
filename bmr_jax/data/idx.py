"""Parser for the IDX format of MNIST and Fashion-MNIST (gzip-compressed).

Format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from bmr_jax.errors import CorruptDataFileError

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one ``.idx*-ubyte.gz`` file into an array of native byte order.

    Raises:
      CorruptDataFileError: the file is not gzip, is truncated, or its header disagrees with
        its payload.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptDataFileError(f"{path}: not a complete gzip file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise CorruptDataFileError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CorruptDataFileError(f"{path}: IDX header is cut short")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[raw[2]]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptDataFileError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes) "
            f"but the file holds {len(raw) - header} bytes of data"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Writes ``array`` as a gzip-compressed IDX file (used to build ``mnist_mini`` and tests).

    The gzip header carries no time stamp, so the same array always gives the same bytes.
    """
    matches = [
        (code, dtype)
        for code, dtype in _IDX_TYPES.items()
        if (dtype.kind, dtype.itemsize) == (array.dtype.kind, array.dtype.itemsize)
    ]
    if not matches:
        raise ValueError(f"IDX has no type code for dtype {array.dtype}")
    code, dtype = matches[0]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=dtype).tobytes()
    with open(path, "wb") as raw_file:
        with gzip.GzipFile(fileobj=raw_file, mode="wb", compresslevel=9, mtime=0, filename="") as f:
            f.write(header + payload)
