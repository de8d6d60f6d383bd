"""Run ffmpeg on bytes: stdin in, stdout out, no temp files, with a time limit and size caps.

The binary is the system's `ffmpeg` when there is one on PATH (distributions build it with AMR),
else the static build shipped by the `imageio-ffmpeg` wheel (ffmpeg 9 with libopencore-amrnb,
libmp3lame, libwebp, hevc/AV1 decoders), so `make install` is all a machine needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import Sequence

from wxbot_common.media.errors import (
    CorruptMediaError,
    EmptyMediaError,
    FfmpegUnavailableError,
    MediaTimeoutError,
    MediaTooLargeError,
    UnsupportedMediaError,
)

_CHUNK = 64 * 1024
_STDERR_KEEP = 4096
_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")


def find_ffmpeg(explicit: str | None = None) -> str:
    """`explicit` if given, else `ffmpeg` on PATH, else the `imageio-ffmpeg` binary."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise FfmpegUnavailableError(f"ffmpeg not executable: {explicit}")
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise FfmpegUnavailableError("no ffmpeg on PATH and no imageio-ffmpeg (wxbot-common[media])") from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise FfmpegUnavailableError(f"imageio-ffmpeg has no binary: {exc}") from exc


class Ffmpeg:
    """One ffmpeg binary with limits; `run` converts bytes to bytes. Share one per process.

    `max_concurrent` bounds the ffmpeg processes alive at once (a burst of voice notes must not
    start a hundred encoders on a 2-core box); the time limit counts the wait for a slot too.
    """

    def __init__(
        self,
        exe: str,
        *,
        timeout_s: float = 30.0,
        max_input_bytes: int = 64 * 1024 * 1024,
        max_output_bytes: int = 64 * 1024 * 1024,
        max_concurrent: int = 2,
        threads: int = 1,
    ) -> None:
        self.exe = exe
        self.timeout_s = timeout_s
        self.max_input_bytes = max_input_bytes
        self.max_output_bytes = max_output_bytes
        self.threads = threads
        self._slots = asyncio.Semaphore(max_concurrent)

    @classmethod
    def locate(
        cls,
        explicit: str | None = None,
        *,
        timeout_s: float = 30.0,
        max_input_bytes: int = 64 * 1024 * 1024,
        max_output_bytes: int = 64 * 1024 * 1024,
        max_concurrent: int = 2,
    ) -> Ffmpeg:
        """Find the binary (see `find_ffmpeg`) and wrap it with these limits."""
        return cls(
            find_ffmpeg(explicit),
            timeout_s=timeout_s,
            max_input_bytes=max_input_bytes,
            max_output_bytes=max_output_bytes,
            max_concurrent=max_concurrent,
        )

    async def run(
        self,
        data: bytes,
        output_args: Sequence[str],
        *,
        input_args: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> bytes:
        """`ffmpeg [input_args] -i pipe:0 [output_args] pipe:1` on `data`; returns stdout.

        Raises EmptyMediaError (no input or no output), MediaTooLargeError (input or output over its
        cap), MediaTimeoutError, UnsupportedMediaError (unknown encoder/decoder) or CorruptMediaError
        (any other failure, with ffmpeg's first error lines as detail).
        """
        if not data:
            raise EmptyMediaError("no bytes")
        if len(data) > self.max_input_bytes:
            raise MediaTooLargeError(f"input is {len(data)} bytes, limit {self.max_input_bytes}")
        argv = [self.exe, "-hide_banner", "-loglevel", "error", "-threads", str(self.threads)]
        argv += [*input_args, "-i", "pipe:0", "-threads", str(self.threads), *output_args, "pipe:1"]
        limit = timeout_s if timeout_s is not None else self.timeout_s
        try:
            async with asyncio.timeout(limit), self._slots:
                code, out, err = await self._spawn(argv, data)
        except TimeoutError:
            raise MediaTimeoutError(f"ffmpeg did not finish within {limit:g} s") from None
        if code != 0:
            raise _failure(err)
        if not out:
            raise EmptyMediaError("ffmpeg produced no output")
        return out

    async def _spawn(self, argv: list[str], data: bytes) -> tuple[int, bytes, bytes]:
        """Run to completion; on any exit (cap, timeout, cancellation) the process is killed and reaped."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        feed = asyncio.create_task(self._feed(proc, data))
        read_out = asyncio.create_task(self._read(proc.stdout, self.max_output_bytes))
        read_err = asyncio.create_task(self._read(proc.stderr, None))
        try:
            await asyncio.gather(feed, read_out, read_err)
            return await proc.wait(), read_out.result(), read_err.result()
        finally:
            for task in (feed, read_out, read_err):
                task.cancel()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    @staticmethod
    async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
        stdin = proc.stdin
        assert stdin is not None
        # ffmpeg may stop reading early (corrupt input, -frames:v 1): a broken pipe is not our error.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(data), _CHUNK):
                stdin.write(data[start : start + _CHUNK])
                await stdin.drain()
            stdin.close()
            await stdin.wait_closed()

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, cap: int | None) -> bytes:
        assert stream is not None
        buf = bytearray()
        while chunk := await stream.read(_CHUNK):
            buf += chunk
            if cap is not None and len(buf) > cap:
                raise MediaTooLargeError(f"output over {cap} bytes")
            if cap is None and len(buf) > 2 * _STDERR_KEEP:  # stderr: keep the tail, from a line start
                cut = len(buf) - _STDERR_KEEP
                newline = buf.find(b"\n", cut)
                del buf[: newline + 1 if newline >= 0 else cut]
        return bytes(buf)


def _failure(stderr: bytes) -> Exception:
    """The first distinct error lines without ffmpeg's `[codec @ 0x…]` prefixes, as a short detail."""
    lines: dict[str, None] = {}
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = _PREFIX.sub("", raw).strip()
        if line and not line.startswith(("Task finished", "Terminating thread")):
            lines.setdefault(line)
    text = " | ".join(list(lines)[:2])[:300] or "ffmpeg failed"
    if "Unknown encoder" in text or "Encoder not found" in text or "Decoder not found" in text:
        return UnsupportedMediaError(text)
    return CorruptMediaError(text)
