"""Serial edge: the technician console and the card reader, over pyserial.

Nothing outside the edge imports this package; the recognition core never
imports pyserial.  (Inside, ``import serial`` is pyserial itself: imports
are absolute.)
"""
