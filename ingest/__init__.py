"""The consumer service: drains SQS into MongoDB at a rate MongoDB can take."""

__all__ = ["__version__"]
__version__ = "0.1.0"
