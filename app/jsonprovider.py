"""Responses serialised with orjson: ~20x faster than json for embeddings, and float32 stays short."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider on orjson; NumPy arrays serialise directly (float32 as shortest float32)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
        except TypeError:  # what orjson refuses (integers past 64 bits) the standard library still writes
            return super().dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


class ApiFlask(Flask):
    """The app class: Flask with orjson responses."""

    json_provider_class = OrjsonProvider
