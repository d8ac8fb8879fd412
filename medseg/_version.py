"""The version of medseg (a leaf module: any layer may import it, and pyproject.toml reads it)."""

__version__ = "0.1.0"
