"""TensorBoard scalars without TensorFlow: an `events.out.tfevents.*` file of `Event` protocol
buffers (tensorflow/core/util/event.proto) in TFRecord framing, the format TensorBoard reads.

Only the fields a scalar needs are encoded: Event {1: wall_time double, 2: step int64,
3: file_version string, 5: summary}, Summary {1: repeated value}, Value {1: tag string,
2: simple_value float}.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from collections.abc import Mapping

FILE_VERSION = "brain.Event:2"


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected.
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: the CRC32C rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One record: length, its masked CRC, the data, its masked CRC (little-endian)."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _float32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except OverflowError:  # Beyond float32's range: infinity, as a float32 cast gives.
        return struct.pack("<f", math.copysign(math.inf, value))


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def event(step: int, wall_time: float, *, scalars: Mapping[str, float] | None = None,
          file_version: str | None = None) -> bytes:
    """An encoded `Event` holding either `file_version` or one summary of `scalars`."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars is not None:
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode())
                              + _varint(2 << 3 | 5) + _float32(value))
            for tag, value in scalars.items())
        out += _length_delimited(5, values)
    return out


class EventWriter:
    """Appends scalar events to a new events file in `logdir`, flushed after each write.

    TensorBoard reads a directory's events files in the order of their names: after the
    time in seconds, a name holds the number of events files already there, so that a
    resumed run's file comes after the earlier ones even within the same second (and from
    another process)."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        now = time.time()
        earlier = sum("tfevents" in name for name in os.listdir(logdir))
        name = (f"events.out.tfevents.{int(now):010d}.{earlier:06d}.{socket.gethostname()}."
                f"{os.getpid()}")
        self._file = open(os.path.join(logdir, name), "ab")  # noqa: SIM115 -- open until close().
        self._write(event(0, now, file_version=FILE_VERSION))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._write(event(step, time.time(), scalars=values))

    def _write(self, data: bytes) -> None:
        self._file.write(tfrecord(data))
        self._file.flush()

    def close(self) -> None:
        self._file.close()
