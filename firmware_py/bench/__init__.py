"""Benchmarks that print JSON: the pipeline (with the dlib peer) and 1:N matching."""
