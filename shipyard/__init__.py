"""Shipyard: an execution platform for ML work that speaks the ClearML REST protocol."""
__version__ = "0.1.0"
