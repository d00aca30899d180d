"""Decision: per-track state machine, its outcome, and the ports it drives."""
