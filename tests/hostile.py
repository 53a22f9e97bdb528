"""Hostile data files, built quickly and without using real disk space (test helper)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """The header of an ``.npy`` file holding ``shape`` items of ``descr``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def sparse_npy(path: Path, shape: tuple[int, ...]) -> Path:
    """An honest float32 ``.npy`` of zeros whose data is a hole in the file."""
    with open(path, "wb") as stream:
        stream.write(npy_header(shape))
        stream.truncate(stream.tell() + int(np.prod(shape)) * 4)
    return path


def deflate_bomb(path: Path, member: str, shape: tuple[int, ...]) -> Path:
    """An ``.npz`` whose one deflated member is a float32 ``.npy`` of zeros of ``shape``
    (under 4 GB): a few MB that inflate to the whole array. Built by repeating one
    flushed deflate block, so no time goes into compressing; the CRC is not computed
    (reading stops long before it would be checked)."""
    header = npy_header(shape)
    size = len(header) + int(np.prod(shape)) * 4
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = 1 << 20
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(b"\0" * chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(size - len(header), chunk)
    tail = compressor.compress(b"\0" * rest) + compressor.flush(zlib.Z_FINISH)
    data = head + block * full + tail
    name = member.encode()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(data), size,
                        len(name), 0) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(data),
                          size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return path
