# One image recipe for every wxbot service; the build argument SERVICE names it. From the repository root:
#   docker build --build-arg SERVICE=nlp -t ghcr.io/wxbot/nlp:0.1.0 .
# (gateway, safety, nlp, context, skills, analytics). Stage 1 generates the protobuf code (as `make proto` does) and
# installs the pinned packages into a virtual environment; stage 2 copies only that environment into a
# slim, non-root image. Only the service's own extras are installed (ffmpeg for gateway and nlp; analytics
# without chDB: it talks to a ClickHouse server).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN test -n "${SERVICE}" || (echo "--build-arg SERVICE=<gateway|safety|nlp|context|skills|analytics|console> is required" >&2; exit 1)
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/wxbot
COPY constraints.txt ./
RUN /opt/wxbot/bin/pip install -c constraints.txt setuptools grpcio-tools mypy-protobuf
COPY proto proto
COPY libs/wxbot-proto libs/wxbot-proto
RUN mkdir -p libs/wxbot-proto/src \
 && PATH=/opt/wxbot/bin:$PATH /opt/wxbot/bin/python -m grpc_tools.protoc -I proto \
      --python_out=libs/wxbot-proto/src --grpc_python_out=libs/wxbot-proto/src \
      --mypy_out=libs/wxbot-proto/src --mypy_grpc_out=libs/wxbot-proto/src $(find proto -name '*.proto') \
 && find libs/wxbot-proto/src/wxbot_proto -type d -exec touch {}/__init__.py \; \
 && touch libs/wxbot-proto/src/wxbot_proto/py.typed
# The runtime libraries (never the devkit: it carries test servers and embedded NATS/Redis).
COPY libs/wxbot-common libs/wxbot-common
COPY libs/wxbot-wecom libs/wxbot-wecom
COPY libs/wxbot-skill libs/wxbot-skill
COPY services/${SERVICE} services/${SERVICE}
RUN test -f "services/${SERVICE}/pyproject.toml" || (echo "no service named ${SERVICE}" >&2; exit 1) \
 && /opt/wxbot/bin/pip install -c constraints.txt --no-build-isolation \
      ./libs/wxbot-proto ./libs/wxbot-common ./libs/wxbot-wecom ./libs/wxbot-skill "./services/${SERVICE}" \
 && /opt/wxbot/bin/pip uninstall -y grpcio-tools mypy-protobuf \
 && printf '#!/bin/sh\nexec python -m wxbot_%s "$@"\n' "${SERVICE}" > /opt/wxbot/bin/wxbot-service \
 && chmod 0755 /opt/wxbot/bin/wxbot-service

FROM ${PYTHON_IMAGE}
ARG SERVICE
LABEL org.opencontainers.image.title="wxbot-${SERVICE}" org.opencontainers.image.source="https://github.com/wxbot/wxbot"
ENV PATH=/opt/wxbot/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HTTP_HOST=0.0.0.0 WXBOT_SERVICE=${SERVICE}
RUN groupadd --system --gid 10001 wxbot && useradd --system --uid 10001 --gid wxbot --no-create-home wxbot
COPY --from=build /opt/wxbot /opt/wxbot
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["/opt/wxbot/bin/wxbot-service"]
