"""freight: move files larger than RAM between machines, resumably, with flat memory."""

__version__ = "0.1.0"
__all__ = ["__version__"]
