"""Media shared by the services: where the OpenAI-compatible media endpoints are (`settings`) and
the blob store that keeps voice and image bytes out of the event log (`store`)."""
