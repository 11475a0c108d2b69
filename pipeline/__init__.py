"""ct-denoise: the data path (read, normalize, denoise, write, QA). No Luigi in here."""

__version__ = "0.1.0"
TOOL_NAME = "ct-denoise"
