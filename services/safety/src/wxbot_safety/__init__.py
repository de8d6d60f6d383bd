"""wxbot safety service."""
