"""AMR-NB file format (RFC 4867 §5 storage format): validate, measure and split without decoding.

Every frame is 20 ms and starts with a header byte whose frame type fixes its length, so the
duration is exact and a long reply splits into WeCom-sized voice parts on frame boundaries
(each part gets the `#!AMR\\n` magic again and plays on its own).
"""

from __future__ import annotations

import math

from wxbot_common.media.errors import CorruptMediaError, EmptyMediaError, MediaTooLargeError

MAGIC = b"#!AMR\n"
FRAME_S = 0.02
# Bytes after the header byte, per frame type: modes 4.75..12.2 kbit/s, SID, then NO_DATA (15).
_PAYLOAD = {0: 12, 1: 13, 2: 15, 3: 17, 4: 19, 5: 20, 6: 26, 7: 31, 8: 5, 15: 0}


def frames(data: bytes) -> list[bytes]:
    """The frames of an AMR-NB file (header byte included); CorruptMediaError on a bad header byte.

    A final frame cut short (a truncated download) is dropped rather than refused.
    """
    if not data:
        raise EmptyMediaError("no bytes")
    if not data.startswith(MAGIC):
        raise CorruptMediaError("not an AMR-NB file (no #!AMR magic)")
    out: list[bytes] = []
    i = len(MAGIC)
    while i < len(data):
        header = data[i]
        frame_type = (header >> 3) & 0x0F
        if header & 0x83 or frame_type not in _PAYLOAD:
            raise CorruptMediaError(f"bad AMR frame header 0x{header:02x} at byte {i}")
        end = i + 1 + _PAYLOAD[frame_type]
        if end > len(data):
            break
        out.append(data[i:end])
        i = end
    if not out:
        raise EmptyMediaError("AMR file has no frames")
    return out


def duration_s(data: bytes) -> float:
    """Exact playing time of an AMR-NB file."""
    return len(frames(data)) * FRAME_S


def split(data: bytes, *, max_part_s: float, max_part_bytes: int) -> list[bytes]:
    """Split into the fewest parts within both limits, of near-equal length (90 s → 2 × 45 s)."""
    all_frames = frames(data)
    per_part = max(1, int(round(max_part_s / FRAME_S, 6)))
    biggest = max(len(f) for f in all_frames)
    per_part = min(per_part, (max_part_bytes - len(MAGIC)) // biggest)
    if per_part < 1:
        raise MediaTooLargeError(f"max_part_bytes {max_part_bytes} cannot hold one AMR frame")
    parts = math.ceil(len(all_frames) / per_part)
    size = math.ceil(len(all_frames) / parts)
    return [MAGIC + b"".join(all_frames[i : i + size]) for i in range(0, len(all_frames), size)]
