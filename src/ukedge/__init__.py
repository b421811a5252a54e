"""ukedge: build, ship and run applications as unikernel images on edge nodes."""

import logging

__version__ = "0.1.0"
__all__ = ["__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
