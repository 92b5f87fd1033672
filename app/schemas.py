"""Pydantic models of every request and response: app/inputs.py validates with them, /openapi.json is built from them.

Unknown fields are ignored everywhere. Limits that depend on configuration (counts, characters, pixels) are
checked in app/inputs.py and documented here in the field descriptions with their defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _not_bool(value: Any) -> Any:
    # JSON true is not the integer 1 here, whatever Python thinks.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


TopK = Annotated[int, Field(ge=1, le=1000, description="Labels per image, 1 to 1000."), BeforeValidator(_not_bool)]
Texts = Annotated[
    list[str] | None,
    Field(
        description="UTF-8 texts; not empty or whitespace-only; at most MAX_TEXT_CHARS (10,000) characters each, "
        "MAX_TEXTS (256) per request; tokens past the text model's limit are truncated."
    ),
]
Images = Annotated[
    list[str] | None,
    Field(
        description="Base64 images (a data:image/...;base64, prefix is allowed): JPEG, PNG, WebP, GIF (first "
        "frame) or BMP; at most MAX_IMAGES (64) per request and MAX_IMAGE_PIXELS (40 MP) each."
    ),
]
ImageFiles = Annotated[
    list[bytes], Field(default_factory=list, description="Image files, one part each (formats and limits as JSON).")
]
FormTexts = Annotated[list[str], Field(default_factory=list, description="Texts, one part each (rules as JSON).")]
Candidates = Annotated[list[str] | None, Field(description="Texts to rank against each image (MAX_CANDIDATES, 256).")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EncodeJson(_Body):
    images: Images = None
    texts: Texts = None
    normalize: bool = True
    space: Literal["native", "shared"] = "native"


class EncodeForm(_Body):
    image: ImageFiles
    text: FormTexts
    normalize: bool = True
    space: Literal["native", "shared"] = "native"


class FuseJson(_Body):
    images: Images = None
    texts: Texts = None


class FuseForm(_Body):
    image: ImageFiles
    text: FormTexts


class CaptionJson(_Body):
    images: Images = None
    top_k: TopK = 5
    candidates: Candidates = None


class CaptionForm(_Body):
    image: ImageFiles
    top_k: TopK = 5
    candidate: Candidates = None
    candidates: Candidates = None


# -- responses ---------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_image, too_many_texts.")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Dims(BaseModel):
    image: int
    text: int


class EncodeResponse(BaseModel):
    image_embeddings: list[list[float]]
    text_embeddings: list[list[float]]
    dims: Dims
    space: Literal["native", "shared"]


class FuseResponse(BaseModel):
    match: list[list[float]] = Field(description="(images x texts) fusion-head probabilities in [0, 1].")
    similarity: list[list[float]] = Field(description="(images x texts) cosine similarity in the shared space.")


class Label(BaseModel):
    label: str
    score: float


class Ranked(BaseModel):
    text: str
    score: float


class CaptionItem(BaseModel):
    caption: str
    labels: list[Label]
    ranked: list[Ranked] | None = None
    ranked_by: str | None = None


class CaptionResponse(BaseModel):
    captions: list[CaptionItem]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed"]
    error: str | None = None


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: Literal["image", "text", "fusion"]
    architecture: str
    output_dim: int


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
