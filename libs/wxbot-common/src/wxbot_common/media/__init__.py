"""Media conversion for voice and images: pure functions over bytes, no service wiring (docs/media.md).

Every function takes an `Ffmpeg` (the binary plus time and size limits) and raises a `MediaError`
subclass whose `reason` a service turns into one plain notice.
"""

from wxbot_common.media.audio import Audio, decode_pcm, pcm_to_wav, probe_duration, to_asr_audio, to_wecom_voice
from wxbot_common.media.errors import (
    CorruptMediaError,
    EmptyMediaError,
    FfmpegUnavailableError,
    MediaError,
    MediaTimeoutError,
    MediaTooLargeError,
    NotAnImageError,
    UnsupportedMediaError,
)
from wxbot_common.media.ffmpeg import Ffmpeg, find_ffmpeg
from wxbot_common.media.image import (
    WECOM_MAX_BYTES,
    Image,
    check_size,
    inspect_image,
    to_vision_image,
    to_wecom_image,
)
from wxbot_common.media.sniff import AudioFormat, ImageFormat, image_dimensions, sniff_audio, sniff_image

__all__ = [
    "WECOM_MAX_BYTES",
    "Audio",
    "AudioFormat",
    "CorruptMediaError",
    "EmptyMediaError",
    "Ffmpeg",
    "FfmpegUnavailableError",
    "Image",
    "ImageFormat",
    "MediaError",
    "MediaTimeoutError",
    "MediaTooLargeError",
    "NotAnImageError",
    "UnsupportedMediaError",
    "check_size",
    "decode_pcm",
    "find_ffmpeg",
    "image_dimensions",
    "inspect_image",
    "pcm_to_wav",
    "probe_duration",
    "sniff_audio",
    "sniff_image",
    "to_asr_audio",
    "to_vision_image",
    "to_wecom_image",
    "to_wecom_voice",
]
