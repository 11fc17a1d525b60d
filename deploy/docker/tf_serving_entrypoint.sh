#!/bin/sh
# TF Serving's image entrypoint (tensorflow_serving/tools/docker/Dockerfile), serving with aserve:
# $MODEL_BASE_PATH/$MODEL_NAME on $GRPC_PORT and $PORT, the container's arguments appended (they
# add flags, or override these: the last of a repeated flag wins). exec makes aserve PID 1, and
# aserve handles SIGTERM itself (readiness off, drain, exit 0).
exec aserve --port="${GRPC_PORT}" --rest_api_port="${PORT}" \
    --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
