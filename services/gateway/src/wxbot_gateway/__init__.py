"""wxbot gateway service."""
