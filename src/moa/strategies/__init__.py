"""Built-in strategies; importing this package registers them."""

from moa.strategies import layered as _layered  # noqa: F401
