"""The hand-written base of every generated message model.

Generated models (``runwire.generated.<family>.models``) subclass :class:`WireModel`. They are
for typing and convenience, not the validator: the JSON Schema validators in
:mod:`runwire.runtime.validation` are the truth on the wire (pydantic cannot express ``not``,
``if``/``then``, ``uniqueItems`` and more).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, RootModel

__all__ = ["WireModel", "WireRootModel"]

RootT = TypeVar("RootT")


class WireModel(BaseModel):
    """A message as it appears on the wire: frozen, strict, keys under their wire names.

    ``strict`` keeps JSON types apart as JSON Schema does (no ``"1"`` for an integer, no ``1``
    for a boolean). Serialise with :meth:`to_wire`, which drops keys that were never set, so a
    model read from the wire writes back the same keys.
    """

    model_config = ConfigDict(frozen=True, strict=True, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this message: wire key names, unset optional keys left out."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return data


class WireRootModel(RootModel[RootT], Generic[RootT]):
    """A definition that is not an object (a union, an enum, a constrained scalar), as a root model.

    Frozen and strict like :class:`WireModel`; the value is in ``.root``.
    """

    model_config = ConfigDict(frozen=True, strict=True)

    def to_wire(self) -> Any:
        """The JSON value of this message."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
