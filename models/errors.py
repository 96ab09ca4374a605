"""The errors of model loading, shared by the registry and every engine module."""

from __future__ import annotations

__all__ = ["ModelCorrupt", "ModelError", "ModelNotFound"]


class ModelError(Exception):
    """A model cannot be provided."""


class ModelNotFound(ModelError):
    """No local model matches the name (and no download was allowed or it failed)."""


class ModelCorrupt(ModelError):
    """Installed model data does not match its recorded checksum."""
