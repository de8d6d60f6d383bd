"""The conversions and the devkit's fakes agree: what a fake serves converts, what we make the fakes accept.

The fakes judge files with their own sniffing and AMR parser (deliberately not ours), so this catches a
format drift on either side before the services are wired.
"""

from __future__ import annotations

import pytest

from wxbot_common.media.audio import to_asr_audio, to_wecom_voice
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.image import to_wecom_image
from wxbot_devkit.fakes.media_files import amr_bytes, amr_duration_s, png_bytes, sniff, wav_bytes

pytestmark = pytest.mark.timeout(60)


async def test_fake_voice_transcribes_and_fake_tts_becomes_voice_the_fake_accepts() -> None:
    ffmpeg = Ffmpeg.locate()
    wav = await to_asr_audio(ffmpeg, amr_bytes(2.0))  # what fake WeCom's media/get serves for voice
    assert sniff(wav.data) == "wav" and wav.duration_s == pytest.approx(2.0, abs=0.05)
    parts = await to_wecom_voice(ffmpeg, wav_bytes(70.0))  # what the fake LLM's /v1/audio/speech returns
    assert len(parts) == 2
    for part in parts:
        seconds = amr_duration_s(part.data)
        assert sniff(part.data) == "amr" and seconds is not None and seconds <= 60 and len(part.data) <= 2_000_000
    image = await to_wecom_image(ffmpeg, png_bytes())
    assert sniff(image.data) == "png"
