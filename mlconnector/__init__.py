"""ml-connector: the integration engine between ERPs and field-service systems."""

__version__ = "0.1.0"
