"""wxbot_common.media against the real ffmpeg (the system's or imageio-ffmpeg's) on generated inputs."""

from __future__ import annotations

import asyncio
import io
import math
import os
import struct
import subprocess
import time
import wave
import zlib
from pathlib import Path

import pytest

from wxbot_common.media import amr as amr_format
from wxbot_common.media.audio import pcm_to_wav, probe_duration, to_asr_audio, to_wecom_voice
from wxbot_common.media.errors import (
    CorruptMediaError,
    EmptyMediaError,
    FfmpegUnavailableError,
    MediaTimeoutError,
    MediaTooLargeError,
    NotAnImageError,
    UnsupportedMediaError,
)
from wxbot_common.media.ffmpeg import Ffmpeg, find_ffmpeg
from wxbot_common.media.image import to_vision_image, to_wecom_image
from wxbot_common.media.sniff import AudioFormat, ImageFormat, image_dimensions, sniff_audio, sniff_image

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ffmpeg() -> Ffmpeg:
    return Ffmpeg.locate(timeout_s=20.0)


def sine_wav(seconds: float, rate: int = 16_000, freq: float = 440.0) -> bytes:
    n = int(seconds * rate)
    samples = struct.pack(f"<{n}h", *(int(12_000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))
    return pcm_to_wav(samples, rate)


def ffmpeg_children() -> list[str]:
    """Pids of this process's ffmpeg children (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if f"\nPPid:\t{os.getpid()}\n" in status and "ffmpeg" in status.split("\n", 1)[0]:
            found.append(entry.name)
    return found


def rms(wav_bytes: bytes) -> float:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        raw = w.readframes(w.getnframes())
    values = struct.unpack(f"<{len(raw) // 2}h", raw)
    return math.sqrt(sum(v * v for v in values) / len(values))


def lavfi_image(ffmpeg: Ffmpeg, source: str, codec_args: list[str]) -> bytes:
    """One frame of an ffmpeg test source, encoded with `codec_args`, from stdout."""
    argv = [ffmpeg.exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source, "-frames:v", "1"]
    return subprocess.run([*argv, *codec_args, "pipe:1"], capture_output=True, check=True, timeout=20).stdout


def png(width: int, height: int, rows: bytes) -> bytes:
    """An RGB PNG written by hand (rows already carry the filter byte)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


def heic_still(ffmpeg: Ffmpeg, width: int = 320, height: int = 240) -> bytes:
    """A one-item HEIF/HEIC image (ISO 23008-12) around an x265 frame: ffmpeg has no HEIF muxer.

    Layout: ftyp, meta (hdlr pict, pitm, iinf/infe hvc1, iloc, iprp: hvcC + ispe, ipma), mdat with
    the frame's NAL units length-prefixed. iPhone photos add a tile grid on top of this.
    """
    argv = [ffmpeg.exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={width}x{height}"]
    argv += ["-frames:v", "1", "-c:v", "libx265", "-x265-params", "log-level=error", "-f", "hevc", "pipe:1"]
    annexb = subprocess.run(argv, capture_output=True, check=True, timeout=20).stdout
    units = [u.rstrip(b"\x00") for u in annexb.split(b"\x00\x00\x01")[1:]]
    kinds = [(u[0] >> 1) & 0x3F for u in units]
    params = {t: [u for u, k in zip(units, kinds, strict=True) if k == t] for t in (32, 33, 34)}  # VPS SPS PPS
    sample = b"".join(struct.pack(">I", len(u)) + u for u, k in zip(units, kinds, strict=True) if k < 32)

    def box(kind: bytes, body: bytes, version: int | None = None) -> bytes:
        head = b"" if version is None else bytes([version, 0, 0, 0])
        return struct.pack(">I", 8 + len(head) + len(body)) + kind + head + body

    sps = params[33][0]
    hvcc = bytes([1]) + sps[3:15] + bytes.fromhex("f000fcfdf8f800000f") + bytes([3])  # 4-byte NAL lengths
    for t in (32, 33, 34):
        hvcc += bytes([0x80 | t]) + struct.pack(">H", len(params[t]))
        hvcc += b"".join(struct.pack(">H", len(u)) + u for u in params[t])
    ftyp = box(b"ftyp", b"heic" + bytes(4) + b"mif1heic")

    def meta(offset: int) -> bytes:
        infe = box(b"infe", struct.pack(">HH", 1, 0) + b"hvc1\x00", 2)
        iloc = box(b"iloc", bytes([0x44, 0]) + struct.pack(">HHHHII", 1, 1, 0, 1, offset, len(sample)), 0)
        ipco = box(b"ipco", box(b"hvcC", hvcc) + box(b"ispe", struct.pack(">II", width, height), 0))
        ipma = box(b"ipma", struct.pack(">IHB", 1, 1, 2) + bytes([0x81, 0x82]), 0)
        hdlr = box(b"hdlr", bytes(4) + b"pict" + bytes(13), 0)
        items = hdlr + box(b"pitm", struct.pack(">H", 1), 0) + box(b"iinf", struct.pack(">H", 1) + infe, 0)
        return box(b"meta", items + iloc + box(b"iprp", ipco + ipma), 0)

    offset = len(ftyp) + len(meta(0)) + 8
    return ftyp + meta(offset) + box(b"mdat", sample)


@pytest.fixture(scope="module")
def images(ffmpeg: Ffmpeg) -> dict[str, bytes]:
    src = "testsrc=size=320x240:rate=1"
    return {
        "png": lavfi_image(ffmpeg, src, ["-c:v", "png", "-f", "image2pipe"]),
        "jpeg": lavfi_image(ffmpeg, src, ["-c:v", "mjpeg", "-f", "image2pipe"]),
        "gif": lavfi_image(ffmpeg, src, ["-f", "gif"]),
        "webp": lavfi_image(ffmpeg, src, ["-c:v", "libwebp", "-f", "webp"]),
        "big": lavfi_image(ffmpeg, "testsrc=size=3000x2000:rate=1", ["-c:v", "png", "-f", "image2pipe"]),
        "heic": heic_still(ffmpeg),
        "alpha_webp": lavfi_image(ffmpeg, "color=c=black@0.0:s=101x51,format=rgba", ["-c:v", "libwebp", "-f", "webp"]),
    }


@pytest.fixture(scope="module")
def noise_png() -> bytes:
    """1200×1200 random pixels: ~4.3 MB that no PNG or JPEG compresses well."""
    side = 1200
    return png(side, side, b"".join(b"\x00" + os.urandom(side * 3) for _ in range(side)))


# --- ffmpeg itself -------------------------------------------------------------------------------


def test_find_ffmpeg_finds_an_executable_and_refuses_a_bad_path() -> None:
    assert os.access(find_ffmpeg(), os.X_OK)
    with pytest.raises(FfmpegUnavailableError):
        find_ffmpeg("/nonexistent/ffmpeg")


async def test_run_enforces_time_input_and_output_limits(ffmpeg: Ffmpeg) -> None:
    pcm = bytes(8000 * 2 * 10)  # 10 s of silence, played at real time so it outlives the timeout
    raw = ["-f", "s16le", "-ar", "8000", "-ac", "1"]
    with pytest.raises(MediaTimeoutError):
        await ffmpeg.run(pcm, ["-af", "arealtime", *raw], input_args=raw, timeout_s=0.5)
    assert not ffmpeg_children()  # killed and reaped, not left running
    small = Ffmpeg(ffmpeg.exe, max_input_bytes=1000, max_output_bytes=1000)
    with pytest.raises(MediaTooLargeError, match="input"):
        await small.run(pcm, ["-f", "s16le"], input_args=["-f", "s16le", "-ar", "8000", "-ac", "1"])
    with pytest.raises(MediaTooLargeError, match="output"):
        await small.run(pcm[:900], ["-ar", "48000", "-f", "s16le"], input_args=["-f", "s16le", "-ar", "8000"])
    with pytest.raises(EmptyMediaError):
        await ffmpeg.run(b"", ["-f", "s16le"])


async def test_concurrent_runs_wait_for_a_slot(ffmpeg: Ffmpeg) -> None:
    async def two_runs(slots: int) -> float:
        runner = Ffmpeg(ffmpeg.exe, max_concurrent=slots)
        pcm = ["-f", "s16le", "-ar", "8000", "-ac", "1"]
        started = time.monotonic()
        runs = (runner.run(bytes(8000 * 2 * 2 // 5), ["-af", "arealtime", *pcm], input_args=pcm) for _ in range(2))
        await asyncio.gather(*runs)  # 0.4 s of audio each, played at real time by the filter
        return time.monotonic() - started

    # one after the other ≈ 0.8 s, side by side ≈ 0.4 s: told apart at the midpoint, not at either
    assert await two_runs(1) > 0.6
    assert await two_runs(2) < 0.6


# --- voice ---------------------------------------------------------------------------------------


async def test_tts_audio_becomes_one_amr_part_and_transcribable_wav_again(ffmpeg: Ffmpeg) -> None:
    parts = await to_wecom_voice(ffmpeg, sine_wav(3.0))
    assert len(parts) == 1
    voice = parts[0]
    assert voice.data.startswith(b"#!AMR\n") and voice.mime == "audio/amr" and voice.filename == "voice.amr"
    assert voice.duration_s == pytest.approx(3.0, abs=0.05)
    assert sniff_audio(voice.data) is AudioFormat.AMR_NB

    asr = await to_asr_audio(ffmpeg, voice.data)
    assert asr.format == "wav" and asr.mime == "audio/wav"
    with wave.open(io.BytesIO(asr.data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
        assert w.getnframes() / 16_000 == pytest.approx(3.0, abs=0.05)
    assert asr.duration_s == pytest.approx(3.0, abs=0.05)
    assert rms(asr.data) > 2000  # the tone survived the AMR round trip, not silence


async def test_ninety_seconds_of_speech_become_two_parts_under_sixty_seconds(ffmpeg: Ffmpeg) -> None:
    parts = await to_wecom_voice(ffmpeg, sine_wav(90.0, rate=8000))
    assert len(parts) == 2
    for part in parts:
        assert part.duration_s <= 60.0 and len(part.data) <= 2_000_000
        assert await probe_duration(ffmpeg, part.data) == pytest.approx(45.0, abs=0.05)
    assert sum(p.duration_s for p in parts) == pytest.approx(90.0, abs=0.05)


def test_amr_split_respects_a_byte_limit_too() -> None:
    frame = b"\x3c" + bytes(31)  # one 12.2 kbit/s frame
    data = amr_format.MAGIC + frame * 100
    parts = amr_format.split(data, max_part_s=60.0, max_part_bytes=len(amr_format.MAGIC) + 32 * 30)
    assert [amr_format.duration_s(p) for p in parts] == pytest.approx([0.5, 0.5, 0.5, 0.5])


async def test_asr_mp3_and_duration_probes(ffmpeg: Ffmpeg) -> None:
    wav = sine_wav(2.0)
    assert await probe_duration(ffmpeg, wav) == pytest.approx(2.0, abs=0.01)
    mp3 = await to_asr_audio(ffmpeg, wav, fmt="mp3")
    assert sniff_audio(mp3.data) is AudioFormat.MP3 and mp3.mime == "audio/mpeg"
    assert mp3.duration_s == pytest.approx(2.0, abs=0.05)
    assert await probe_duration(ffmpeg, mp3.data) == pytest.approx(2.0, abs=0.1)
    with pytest.raises(MediaTooLargeError):
        await to_asr_audio(ffmpeg, wav, max_duration_s=1.0)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyMediaError),
        (b"#!AMR\n", EmptyMediaError),
        (b"#!AMR\n" + b"\x4c" * 200, CorruptMediaError),  # reserved frame type 9
        (bytes(range(256)) * 8, CorruptMediaError),  # no known container: ffmpeg refuses it
        (b'{"errcode":40007,"errmsg":"invalid media_id"}', UnsupportedMediaError),  # media/get's JSON error
        (b"<html><body>login</body></html>", UnsupportedMediaError),
        (b"\x02#!SILK_V3" + bytes(100), UnsupportedMediaError),
    ],
    ids=["empty", "amr-magic-only", "corrupt-amr", "garbage", "json-error", "html", "silk"],
)
async def test_bad_voice_gets_a_typed_error(ffmpeg: Ffmpeg, data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        await to_asr_audio(ffmpeg, data)
    assert str(caught.value)  # a short reason for the log and the notice


async def test_amr_with_a_corrupt_stretch_is_refused_not_half_transcribed(ffmpeg: Ffmpeg) -> None:
    good = (await to_wecom_voice(ffmpeg, sine_wav(2.0)))[0].data
    damaged = good[:1000] + b"\x4c" * 40 + good[1000:]  # ffmpeg alone would skip these and decode the rest
    with pytest.raises(CorruptMediaError, match="frame header"):
        await to_asr_audio(ffmpeg, damaged)


async def test_wav_without_samples_is_empty(ffmpeg: Ffmpeg) -> None:
    with pytest.raises(EmptyMediaError):
        await to_asr_audio(ffmpeg, pcm_to_wav(b"", 16_000))


# --- images --------------------------------------------------------------------------------------


def test_sniff_and_measure_every_generated_format(images: dict[str, bytes]) -> None:
    for name, fmt in [("png", ImageFormat.PNG), ("jpeg", ImageFormat.JPEG), ("gif", ImageFormat.GIF)]:
        assert sniff_image(images[name]) is fmt
        assert image_dimensions(images[name], fmt) == (320, 240)
    assert sniff_image(images["webp"]) is ImageFormat.WEBP
    assert image_dimensions(images["webp"], ImageFormat.WEBP) == (320, 240)
    assert sniff_image(images["heic"]) is ImageFormat.HEIC


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyMediaError),
        (b"<!DOCTYPE html><html><head><title>Login</title>", NotAnImageError),
        (b'{"errcode":40007,"errmsg":"invalid media_id"}', NotAnImageError),
        (bytes(range(256)), UnsupportedMediaError),
    ],
    ids=["empty", "html", "json", "binary"],
)
def test_sniff_refuses_what_is_not_an_image(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        sniff_image(data)


async def test_small_jpeg_and_png_go_to_wecom_unchanged(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    for name in ("png", "jpeg"):
        out = await to_wecom_image(ffmpeg, images[name])
        assert out.data == images[name]
    assert (await to_wecom_image(ffmpeg, images["jpeg"])).filename == "image.jpg"


async def test_large_image_is_recompressed_under_two_megabytes(ffmpeg: Ffmpeg, noise_png: bytes) -> None:
    assert len(noise_png) > 4_000_000
    out = await to_wecom_image(ffmpeg, noise_png)
    assert out.format is ImageFormat.JPEG and sniff_image(out.data) is ImageFormat.JPEG
    assert len(out.data) <= 2 * 1024 * 1024
    assert out.width is not None and out.height is not None and out.width == out.height <= 1200


async def test_gif_and_webp_become_jpeg(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    for name in ("gif", "webp"):
        for convert in (to_wecom_image, to_vision_image):
            out = await convert(ffmpeg, images[name])
            assert sniff_image(out.data) is ImageFormat.JPEG
            assert (out.width, out.height) == (320, 240)
    vision = await to_vision_image(ffmpeg, images["gif"])
    assert vision.data_url().startswith("data:image/jpeg;base64,/9j/")


@pytest.fixture(scope="module")
def avif(ffmpeg: Ffmpeg, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out_file = tmp_path_factory.mktemp("avif") / "t.avif"  # the avif muxer needs a seekable output
    argv = [ffmpeg.exe, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=1"]
    argv += ["-frames:v", "1", "-c:v", "libaom-av1", "-still-picture", "1", "-cpu-used", "8", str(out_file)]
    subprocess.run(argv, check=True, timeout=20)
    return out_file.read_bytes()


async def test_heic_is_converted_for_wecom_and_vision(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    for convert in (to_wecom_image, to_vision_image):
        out = await convert(ffmpeg, images["heic"])
        assert out.format is ImageFormat.JPEG and (out.width, out.height) == (320, 240)
        # The same picture as the PNG of the same test source, not a grey or black failed decode.
        thumb = ["-vf", "scale=8:6:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        got, want = await ffmpeg.run(out.data, thumb), await ffmpeg.run(images["png"], thumb)
        mean_diff = sum(abs(a - b) for a, b in zip(got, want, strict=True)) / len(want)
        assert mean_diff < 50  # ~36 after JPEG's chroma subsampling of the sharp bars; a grey frame is ~89


async def test_avif_from_the_heif_container_decodes_through_a_pipe(ffmpeg: Ffmpeg, avif: bytes) -> None:
    assert sniff_image(avif) is ImageFormat.AVIF
    out = await to_vision_image(ffmpeg, avif)
    assert out.format is ImageFormat.JPEG and (out.width, out.height) == (320, 240)


async def test_vision_image_is_scaled_to_its_long_side(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    out = await to_vision_image(ffmpeg, images["big"])
    assert out.format is ImageFormat.JPEG and (out.width, out.height) == (1536, 1024)
    small = await to_vision_image(ffmpeg, images["png"])
    assert small.data == images["png"]


async def test_a_phone_photos_exif_rotation_is_applied(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    # EXIF Orientation 6 ("rotate 90° clockwise to display"), as phones write it, in an APP1 segment.
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + bytes(4)
    app1 = b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + ifd
    rotated = images["jpeg"][:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + images["jpeg"][2:]
    out = await to_vision_image(ffmpeg, rotated, max_side=160)
    assert (out.width, out.height) == (120, 160)  # upright: portrait, not the stored landscape


async def test_transparency_is_flattened_onto_white(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    out = await to_wecom_image(ffmpeg, images["alpha_webp"])
    assert (out.width, out.height) == (101, 51)
    rgb = await ffmpeg.run(out.data, ["-f", "rawvideo", "-pix_fmt", "rgb24"])
    assert min(rgb) > 240  # white, not the black a plain alpha drop gives


async def test_oversized_images_are_refused_before_decoding(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    forty_mb = images["png"] + bytes(40 * 1024 * 1024)
    with pytest.raises(MediaTooLargeError, match="bytes"):
        await to_wecom_image(ffmpeg, forty_mb)
    # A few hundred bytes claiming 30000×30000 pixels (a decompression bomb): refused from the header.
    bomb = png(30_000, 30_000, b"\x00" * 100)
    with pytest.raises(MediaTooLargeError, match="pixels"):
        await to_vision_image(ffmpeg, bomb)


async def test_undecodable_images_get_a_typed_error(ffmpeg: Ffmpeg, images: dict[str, bytes]) -> None:
    broken_gif = images["gif"][:13] + bytes(200)  # a GIF header, then nothing decodable
    with pytest.raises(CorruptMediaError):
        await to_vision_image(ffmpeg, broken_gif)
    fake_heic = struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic" + os.urandom(2000)
    with pytest.raises(UnsupportedMediaError, match="HEIC"):
        await to_vision_image(ffmpeg, fake_heic)
    with pytest.raises(NotAnImageError, match="HTML"):
        await to_wecom_image(ffmpeg, b"<html><body>Please log in</body></html>")
