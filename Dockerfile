# Production image: gunicorn + TensorFlow on CPU, weights converted at build time.
# docker build -t mm-server .                      (EfficientNet-Lite0, works offline)
# docker build --build-arg IMAGE_ENCODER=resnet50 -t mm-server:resnet50 .   (downloads ResNet50 weights)
# docker build --build-arg IMAGE_RUNTIME=onnxruntime -t mm-server:onnx .     (ONNX Runtime runs the image encoder)
FROM python:3.11-slim-bookworm

ARG IMAGE_ENCODER=efficientnet_lite0
ARG IMAGE_RUNTIME=tensorflow
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MODEL_DIR=/opt/models \
    KERAS_HOME=/opt/keras \
    IMAGE_ENCODER=${IMAGE_ENCODER} \
    IMAGE_RUNTIME=${IMAGE_RUNTIME} \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /srv
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app

# Dependencies in their own layer: rebuilt only when a requirements file changes.
COPY requirements.txt requirements-nodeps.txt requirements-onnx.txt ./
COPY scripts/install.sh scripts/install.sh
RUN scripts/install.sh --deps-only

COPY . .
# The same weights step `make serve` runs; never at worker start.
RUN scripts/install.sh --weights-only && chmod -R a+rX /opt/models

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4).status != 200)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
