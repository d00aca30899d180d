"""The composition root's parts: wiring the packages into a reader (used by reader.py)."""
