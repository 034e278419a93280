"""The pymongo driver, imported here and only here for the MongoDB store.

Importing ``fluxo.stores.mongo`` works without pymongo, so ``open_store`` can
say what is missing: building a :class:`~fluxo.stores.mongo.MongoStore` then
raises ``DefinitionError`` naming the extra to install (:func:`require`). The
store's modules use the driver's names through this module.
"""

from __future__ import annotations

from fluxo import _errors

try:
    import pymongo
    from bson.binary import Binary
    from bson.errors import BSONError
    from pymongo import ReturnDocument
    from pymongo.collection import Collection
    from pymongo.errors import (
        BulkWriteError,
        ConnectionFailure,
        DuplicateKeyError,
        OperationFailure,
        PyMongoError,
    )
except ImportError:  # pragma: no cover - depends on the installation
    MISSING = True
else:
    MISSING = False

__all__ = [
    "MISSING",
    "BSONError",
    "Binary",
    "BulkWriteError",
    "Collection",
    "ConnectionFailure",
    "DuplicateKeyError",
    "OperationFailure",
    "PyMongoError",
    "ReturnDocument",
    "pymongo",
    "require",
]


def require() -> None:
    """Raise ``DefinitionError`` naming the extra to install when pymongo is missing."""
    if MISSING:
        raise _errors.DefinitionError(
            "the MongoDB store needs the pymongo driver; install it with pip install 'fluxo[mongo]'"
        )
