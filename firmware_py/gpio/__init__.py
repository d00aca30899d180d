"""GPIO edge: pin maps, gpiozero devices, the door and the status feedback.

Everything that imports gpiozero lives here (and in :mod:`firmware_py.gate`);
the recognition core never does.  :mod:`firmware_py.config.pinmap` is pure
Python so that config validation can check pins without gpiozero.
"""
