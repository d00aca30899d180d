"""Accuracy evaluations on real data that print JSON: LFW verification and open-set identification."""
