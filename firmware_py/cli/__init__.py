"""The `kaoclock` command line: one module per command group."""
