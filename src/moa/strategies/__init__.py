"""Built-in strategies; importing this package registers them."""

from moa.strategies import chunked as _chunked  # noqa: F401
from moa.strategies import critique as _critique  # noqa: F401
from moa.strategies import layered as _layered  # noqa: F401
from moa.strategies import rank as _rank  # noqa: F401
from moa.strategies import reaggregate as _reaggregate  # noqa: F401
from moa.strategies import self_moa as _self_moa  # noqa: F401
from moa.strategies import sparse as _sparse  # noqa: F401
from moa.strategies import vote as _vote  # noqa: F401
