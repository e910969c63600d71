"""The base of the library's pydantic models.

A pydantic model builds its validator and serializer when its class is created, unless its
config defers the build; then the first validation, dump or schema builds them. The library
declares some sixty models and most programs use a few (the ``memos`` command one or two), so
each of them subclasses :class:`Model`, which defers: importing the declarations is cheap.
A subclass's own ``model_config`` is merged with this one, so it keeps ``defer_build``.
"""

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A pydantic model that builds its validator and serializer on first use."""

    model_config = ConfigDict(defer_build=True)
