"""kaoclock: firmware of a gate-mounted face-recognition time clock and door reader."""

__version__ = "0.1.0"
