"""Turning values into bytes and back.

A :class:`Codec` encodes what workflows and steps take and return, and decodes
it by the annotated type, so a step annotated ``-> Receipt`` hands the
workflow a ``Receipt`` both live and on replay. The default, :class:`JSONCodec`,
is built on msgspec and understands dataclasses, enums, datetimes, dates,
times, UUIDs, Decimals, bytes, tuples, sets, TypedDicts, NamedTuples,
``msgspec.Struct`` and (when installed) pydantic models.

Codecs are pluggable: wrap the default to encrypt or compress, or supply
another format. Pickle is never used: bytes read from a database must not be
able to run code.
"""

from __future__ import annotations

import builtins
import sys
import threading
import typing
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import msgspec
import msgspec.inspect

from fluxo import _errors


@runtime_checkable
class Codec(Protocol):
    """Encodes values to bytes and decodes bytes to values of an expected type.

    A codec may also have ``check_type(type) -> str | None``, saying why it cannot
    decode values annotated ``type`` (``None`` when it can): an ``Engine`` with
    such a codec checks its workflows' annotations with it when it is created
    (see :meth:`JSONCodec.check_type`). It is optional, so it is not part of the
    protocol's required methods.
    """

    def encode(self, value: Any) -> bytes:
        """Return the bytes for ``value``; raise ``TypeError`` if it cannot be encoded."""
        ...

    def decode(self, data: bytes, type: Any = Any) -> Any:
        """Return the value ``data`` holds, as ``type`` (``typing.Any``: as decoded)."""
        ...


def _pydantic_base() -> type[Any] | None:
    # Only a program that already imported pydantic can hand us a pydantic model.
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None)
    return base if isinstance(base, type) else None


def _enc_hook(value: Any) -> Any:
    base = _pydantic_base()
    if base is not None and isinstance(value, base):
        return value.model_dump(mode="json")
    raise TypeError(f"Encoding objects of type {type(value).__qualname__} is unsupported")


def _dec_hook(target: Any, value: Any) -> Any:
    base = _pydantic_base()
    if base is not None and isinstance(target, type) and issubclass(target, base):
        return target.model_validate(value)  # type: ignore[attr-defined]
    # A TypeError becomes msgspec's ValidationError, so decode() raises DecodeError;
    # NotImplementedError would escape msgspec untranslated.
    raise TypeError(
        f"the JSON codec does not know how to decode {_type_name(target)}; annotate with "
        "a dataclass, TypedDict, standard type or pydantic model, or pass a codec that does"
    )


class JSONCodec:
    """The default codec: JSON via msgspec, decoded by type annotation.

    Example:
        >>> codec = JSONCodec()
        >>> codec.decode(codec.encode((1, "a")), tuple[int, str])
        (1, 'a')
    """

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook, decimal_format="string")
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "JSONCodec()"

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` as JSON; raise ``EncodeError`` (a ``TypeError``) if it cannot be."""
        try:
            return self._encoder.encode(value)
        except (ValueError, OverflowError, RecursionError) as exc:
            # e.g. a str holding a lone surrogate, or a self-referencing list: keep the
            # contract that every unencodable value raises TypeError.
            raise _errors.EncodeError(
                f"cannot encode a value of type {_type_name(type(value))} as JSON: {exc}"
            ) from exc

    def decode(self, data: bytes, type: Any = Any) -> Any:
        """Decode JSON ``data`` as ``type``; raise ``DecodeError`` if it does not fit."""
        decoder = self._decoders.get(type)
        if decoder is None:
            decoder = self._decoder_for(type)
        try:
            return decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise _errors.DecodeError(
                f"stored value does not decode as {_type_name(type)}: {exc}"
            ) from exc

    def check_type(self, type: Any) -> str | None:
        """Tell why values annotated ``type`` cannot be decoded, or ``None`` when they can.

        Fluxo calls it when a workflow or step is decorated, for each annotation it
        decodes by, and when an ``Engine`` whose codec has this method registers
        its workflows (a codec without it is not checked). ``typing.Any`` is
        decoded as the JSON holds it; ``object`` says nothing to decode to, and a
        class that is not a dataclass, TypedDict, NamedTuple, ``msgspec.Struct``,
        enum or pydantic model cannot be rebuilt from JSON.
        """
        if type in _NEVER:
            return None  # a function that never returns has no value to decode
        try:
            info = msgspec.inspect.type_info(type)
        except TypeError as exc:
            return f"the JSON codec cannot decode it ({exc})"
        pydantic = _pydantic_base()
        for cls, where in _custom_classes(info, "", set()):
            if (
                pydantic is not None
                and isinstance(cls, builtins.type)
                and issubclass(cls, pydantic)
            ):
                continue
            inside = f" (in {where})" if where else ""
            if cls is object:
                return (
                    f"object{inside} names no type to decode JSON to; annotate it with "
                    "typing.Any to take whatever JSON value was stored"
                )
            return (
                f"{_type_name(cls)}{inside} is not a type the JSON codec can rebuild: it is not "
                "a dataclass, TypedDict, NamedTuple, msgspec.Struct, enum or pydantic model"
            )
        return None

    def _decoder_for(self, type: Any) -> msgspec.json.Decoder[Any]:
        try:
            decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(type, dec_hook=_dec_hook)
        except TypeError as exc:
            raise _errors.DefinitionError(
                f"the JSON codec cannot decode values annotated {_type_name(type)}: {exc}; "
                "annotate with a dataclass, TypedDict, standard type or pydantic model, "
                "or pass a codec that understands it"
            ) from exc
        with self._lock:
            self._decoders[type] = decoder
        return decoder


_NEVER: tuple[Any, ...] = (typing.NoReturn, getattr(typing, "Never", typing.NoReturn))


def _custom_classes(
    node: msgspec.inspect.Type, where: str, seen: set[int]
) -> Iterator[tuple[Any, str]]:
    """The classes msgspec would hand to a decode hook, anywhere in ``node``, with their place."""
    if id(node) in seen:  # a recursive type
        return
    seen.add(id(node))
    if isinstance(node, msgspec.inspect.CustomType):
        yield node.cls, where
        return
    for name in ("item_type", "key_type", "value_type", "type"):
        child = getattr(node, name, None)
        if isinstance(child, msgspec.inspect.Type):
            yield from _custom_classes(child, where, seen)
    for name in ("item_types", "types"):
        for child in getattr(node, name, ()):
            yield from _custom_classes(child, where, seen)
    owner = getattr(node, "cls", None)
    for field in getattr(node, "fields", ()):
        place = f"field {getattr(owner, '__qualname__', owner)}.{field.name}"
        yield from _custom_classes(field.type, place, seen)


def _type_name(tp: Any) -> str:
    """A type as a message names it: ``builtins.int``, ``shop.Receipt``, ``list[int]``.

    A record of Fluxo's internals is named as such, never by its private module.
    """
    if isinstance(tp, type):
        if tp.__module__.startswith("fluxo._"):
            return f"Fluxo's {tp.__qualname__} record"
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def qualified_name(tp: type[Any]) -> str:
    """Return ``module.qualname`` for a class, as histories record type names."""
    return f"{tp.__module__}.{tp.__qualname__}"
