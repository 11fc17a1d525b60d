# aserve in the shape of TF Serving's image (tensorflow/serving): the same ports, environment
# variables, entrypoint and appended arguments, so a deployment switches by changing the image.
#
#   docker build -t aserve .                         # extras: --build-arg EXTRAS=s3,gcs
#   docker run -p 8500:8500 -p 8501:8501 \
#       -v "$PWD/examples/models/half_plus_two:/models/half_plus_two" \
#       -e MODEL_NAME=half_plus_two aserve [more flags, appended; the last of a repeat wins]
#
# deploy/build-image.sh builds and smoke-tests it with podman, without any registry.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
# a C compiler, for the compiled request path (README, "Compiled request path"); where none can
# be installed (or the base has no Python headers) the wheel is pure Python, and says so
RUN command -v cc >/dev/null || { apt-get update -qq && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; } || echo "no C compiler: the request path is pure Python"
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# comma-separated extras of the aserve package, e.g. "s3" or "s3,gcs" (object storage)
ARG EXTRAS=""
COPY --from=wheel /wheels /tmp/wheels
RUN set -eu; \
    wheel="$(ls /tmp/wheels/aserve-*.whl)"; \
    pip install --no-cache-dir "${wheel}${EXTRAS:+[${EXTRAS}]}"; \
    rm -rf /tmp/wheels; \
    useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin aserve; \
    ln -s "$(command -v aserve)" /usr/bin/tensorflow_model_server

COPY deploy/docker/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh
COPY deploy/docker/monitoring.config /etc/aserve/monitoring.config

# TF Serving's variables: the gRPC and REST ports, and where the model is
ENV GRPC_PORT=8500 \
    PORT=8501 \
    MODEL_BASE_PATH=/models \
    MODEL_NAME=model \
    PYTHONUNBUFFERED=1
RUN mkdir -p "${MODEL_BASE_PATH}"

USER 1000:1000
EXPOSE 8500 8501
# the image has no curl: Python asks the readiness endpoint on $PORT (so move the REST port
# with -e PORT=..., not --rest_api_port; Kubernetes ignores this and uses its own probes)
HEALTHCHECK --start-period=120s --interval=10s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/v2/health/ready', timeout=4)"]
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
