"""One module per config section; each package owns its file."""
