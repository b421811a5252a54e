"""The ``ukedge`` command: one module per command group, thin over the packages below it."""
