"""What a channel tells the drafting stage about an image message (docs/media.md, "Image in").

The gateway downloads, converts (`to_vision_image`) and stores the image before publishing; the
event carries the stored file's `MediaRef` and `IMAGE_STATUS`: `ok`, or the reason it failed
(`download`, `too_large`, `not_image`, `unsupported`, `corrupt`, `empty`, `store`, `timeout`,
`error`), which the drafting stage answers with one notice instead of a model call.
"""

from __future__ import annotations

from wxbot_proto.events.v1 import events_pb2 as ev

IMAGE_STATUS = "wxbot.image"
IMAGE_OK = "ok"
IMAGE_TEXT = "[image]"
"""The text of an image without a caption: what safety checks and context records as the user's turn."""


def has_image(message: ev.MessageReceived) -> bool:
    """An image the channel stored for the model (a captioned one included)."""
    return message.attributes.get(IMAGE_STATUS) == IMAGE_OK and message.media.content_type.startswith("image/")


def image_failed(message: ev.MessageReceived) -> bool:
    """An image message whose image could not be fetched or read (it gets one notice)."""
    status = message.attributes.get(IMAGE_STATUS)
    return status is not None and status != IMAGE_OK
