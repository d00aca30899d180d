"""One module per config section; each room owns its file."""
