"""The command-line interface: wiring only. The work happens in the library modules."""
