"""``.npz`` files written and read block by block, so per-image outputs (γ curves, posterior samples) of whole
datasets never sit in memory at once (issue 21 item 2).

:class:`NpzWriter` writes the same file ``np.savez`` does (an uncompressed ZIP of ``.npy`` members, ZIP64 when
large), but an array may be streamed: its header is written from the declared shape, then its rows block by
block. :func:`load_npz_lazy` maps the members of such an (uncompressed) file read-only with ``np.memmap``, so a
consumer reads only the rows it touches; ``np.load`` reads the files as usual.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["NpzWriter", "load_npz_lazy"]


class _Stream:
    """An open ``.npy`` member being filled row block by row block (:meth:`NpzWriter.stream`)."""

    def __init__(self, fh: Any, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.fh, self.name, self.shape, self.dtype = fh, name, shape, dtype
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.name}: a block of shape {block.shape} for rows of shape {self.shape[1:]}")
        if self.rows + block.shape[0] > self.shape[0]:
            raise ValueError(f"{self.name}: more than the declared {self.shape[0]} rows")
        self.fh.write(block.tobytes())
        self.rows += block.shape[0]


class NpzWriter:
    """An ``.npz`` written into ``path + '.partial'`` and renamed into place on a successful ``with`` block::

        with NpzWriter(out) as npz:
            npz.add("grid", grid)                                  # a small array, at once
            with npz.stream("curves", (n, g), np.float32) as rows:   # a large one, block by block
                for block in blocks:
                    rows.write(block)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._zip = zipfile.ZipFile(self._tmp, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._open: _Stream | None = None

    def add(self, name: str, array: Any) -> None:
        """Store a whole array (as ``np.savez`` does)."""
        array = np.asanyarray(array)
        with self.stream(name, array.shape, array.dtype) as rows:
            if array.ndim:
                rows.write(array)
            else:
                rows.fh.write(array.tobytes())
                rows.rows = 0

    class _StreamContext:
        def __init__(self, writer: "NpzWriter", name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
            self.writer, self.name, self.shape, self.dtype = writer, name, shape, dtype

        def __enter__(self) -> _Stream:
            if self.writer._open is not None:
                raise RuntimeError(f"{self.writer.path}: {self.writer._open.name} is still being written")
            fh = self.writer._zip.open(self.name + ".npy", mode="w", force_zip64=True)
            np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": self.shape})
            self.writer._open = _Stream(fh, self.name, self.shape, self.dtype)
            return self.writer._open

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            stream, self.writer._open = self.writer._open, None
            stream.fh.close()
            if exc_type is None and self.shape and stream.rows != self.shape[0]:
                raise ValueError(f"{self.writer.path}: {self.name} got {stream.rows} of its {self.shape[0]} rows")

    def stream(self, name: str, shape: Sequence[int], dtype: Any) -> "NpzWriter._StreamContext":
        """A context whose value takes the rows of array ``name`` of the declared ``shape`` block by block."""
        return NpzWriter._StreamContext(self, name, tuple(int(s) for s in shape), np.dtype(dtype))

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._zip.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def load_npz_lazy(path: str | Path) -> dict[str, np.ndarray]:
    """Every member of an uncompressed ``.npz`` as a read-only ``np.memmap`` (nothing is read until used)."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: member {info.filename} is compressed; lazy loading needs np.savez files")
            fh.seek(info.header_offset)
            local = fh.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject:
                raise ValueError(f"{path}: member {info.filename} holds Python objects")
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                                  order="F" if fortran else "C") if int(np.prod(shape)) else np.zeros(shape, dtype)
    return out
