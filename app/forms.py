"""A request class whose form fields must be strict UTF-8 (400 otherwise); Werkzeug would replace bad bytes."""

from __future__ import annotations

import codecs
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.datastructures import Headers
from werkzeug.formparser import FormDataParser, MultiPartParser

from app.errors import ApiError

_CODEC = "api_strict_utf8"


def _strict_decode(data, errors="strict"):
    # Werkzeug passes errors="replace"; this codec ignores it on purpose.
    return codecs.utf_8_decode(data, "strict", True)


def _search(name: str):
    if name == _CODEC:
        utf8 = codecs.lookup("utf-8")
        return codecs.CodecInfo(utf8.encode, _strict_decode, name=_CODEC)
    return None


codecs.register(_search)


def _invalid_utf8() -> ApiError:
    return ApiError(400, "invalid_text_encoding", "A form field is not valid UTF-8.")


class _StrictMultiPartParser(MultiPartParser):
    def get_part_charset(self, headers: Headers) -> str:
        return _CODEC  # UTF-8 only, whatever charset a part declares


class StrictFormDataParser(FormDataParser):
    """Form parsing as Werkzeug does it, except that undecodable text raises a 400 instead of being replaced."""

    def _parse_multipart(self, stream, mimetype, content_length, options):
        parser = _StrictMultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
        )
        boundary = options.get("boundary", "").encode("ascii", "replace")
        if not boundary:
            raise ApiError(400, "invalid_multipart", "The multipart body has no boundary.")
        try:
            form, files = parser.parse(stream, boundary, content_length)
        except UnicodeDecodeError:
            raise _invalid_utf8() from None
        except ValueError:
            raise ApiError(400, "invalid_multipart", "The multipart body is malformed.") from None
        return stream, form, files

    def _parse_urlencoded(self, stream, mimetype, content_length, options):
        try:
            items = parse_qsl(stream.read().decode("utf-8"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise _invalid_utf8() from None
        return stream, self.cls(items), self.cls()


class ApiRequest(Request):
    form_data_parser_class = StrictFormDataParser
