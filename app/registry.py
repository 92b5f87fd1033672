"""Attach the model registry to the app and reach it from requests."""

from __future__ import annotations

from flask import Flask, current_app

from app.errors import ApiError
from models.loading import build_worker_registry
from models.registry import ModelRegistry, RegistryLoader


def init_registry(app: Flask, registry: ModelRegistry | None = None) -> None:
    """Use the given registry (tests), or build one from config in the background (each worker)."""
    if registry is not None:
        loader = RegistryLoader.ready(registry)
    elif app.config.get("MODEL_REGISTRY"):
        # Test hook (MODEL_REGISTRY=module:function): real gunicorn over tiny models, built after the fork.
        factory = _import_factory(app.config["MODEL_REGISTRY"])
        loader = RegistryLoader(factory).start()
    else:
        config = dict(app.config)
        loader = RegistryLoader(lambda: build_worker_registry(config)).start()
    app.extensions["models"] = loader


def _import_factory(spec: str):
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"MODEL_REGISTRY must look like 'package.module:function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def registry_loader() -> RegistryLoader:
    return current_app.extensions["models"]


def current_registry() -> ModelRegistry:
    """The ready registry, or a 503 that tells the client to come back."""
    loader = registry_loader()
    registry = loader.registry
    if registry is None:
        if loader.status == "failed":
            raise ApiError(503, "models_failed", "The models failed to load; see the server log.")
        raise ApiError(503, "not_ready", "The models are still loading; retry shortly.", {"Retry-After": "5"})
    return registry
