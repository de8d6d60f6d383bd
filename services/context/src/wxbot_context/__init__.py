"""wxbot context service."""
