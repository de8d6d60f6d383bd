"""wxbot nlp service."""
