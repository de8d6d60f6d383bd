"""Media shared by the services (docs/media.md): where the OpenAI-compatible media endpoints are
(`settings`), the blob store that keeps voice and image bytes out of the event log (`store`), and
the conversions, pure functions over bytes run by ffmpeg (`ffmpeg`, `audio`, `image`, `sniff`,
`amr`, `errors`). Import from the modules: this package imports nothing, so a service that only
needs the store loads no conversion code."""
