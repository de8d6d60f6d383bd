"""Load generator for wxbot: `python -m bench --help` (or `make bench`)."""
