"""The baseline: the typical Flask tutorial server (model loaded once, model.predict per request, one image).

    python -m bench.naive_server --port 8001 [--image-encoder resnet50] [--model-dir DIR]

Same weights and preprocessing as the real server, run with Flask's threaded server as tutorials do. The one
addition is a lock around `model.predict`: Keras's predict is not thread-safe, and without the lock this
server died (no traceback) under 4 concurrent clients in one of our runs.
"""

from __future__ import annotations

import argparse
import io
import os
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image


def create_naive_app(image_encoder: str, model_dir: str) -> Flask:
    from models import weights
    from models.loading import load_image_encoder

    manifest = weights.verify(model_dir, [image_encoder])
    encoder = load_image_encoder(image_encoder, model_dir, manifest["models"][image_encoder])
    model = encoder.model
    lock = threading.Lock()
    app = Flask(__name__)

    @app.get("/readyz")
    def readyz():
        return {"status": "ready"}

    @app.post("/encode")
    def encode():
        image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
        x = encoder.preprocess(image)[None].astype(np.float32)
        with lock:
            out = model.predict(x, verbose=0)
        return jsonify({"image_embeddings": out["features"].tolist()})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--image-encoder", default="efficientnet_lite0")
    parser.add_argument("--model-dir", default="model_store")
    args = parser.parse_args()
    create_naive_app(args.image_encoder, args.model_dir).run("127.0.0.1", args.port, threaded=True)


if __name__ == "__main__":
    main()
