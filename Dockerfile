# One image, every role: `kubecrawl api | worker | operator | trigger | migrate | standalone | crawl`.
# Build: docker build -t kubecrawl:dev .   (the official Python image below). Without a Docker engine, as on the
# CI machines: tools/image/build (buildah, on a Debian bookworm base it makes itself; docs/deploy.md).
# Both stages use the same base, so the venv's interpreter (/usr/local/bin/python3 in the official image,
# /usr/bin/python3 in Debian's) exists in the final stage.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# uv installs exactly what uv.lock pins, the lock scripts/test installs from too: the image and CI run the same
# versions, and a security fix is a lock change, never a resolver's choice at build time.
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never UV_PYTHON_PREFERENCE=only-system UV_PYTHON=python3 \
    UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/kubecrawl
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install -q "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
# The dependencies first, in their own layer: a change in src/ does not download them again.
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --no-install-project
COPY README.md ./
COPY src ./src
# Runtime dependencies only (no extras), kubecrawl itself as a wheel (no link back to /src). Bytecode is compiled
# here, once: the pods run with a read-only root filesystem (and PYTHONDONTWRITEBYTECODE), so a process could never
# cache it and would recompile every module at each start (seconds of CPU per pod and per CrawlSite trigger run).
# unchecked-hash: the files never change in an image, so Python need not compare them with their sources' mtimes.
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable \
 && python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/kubecrawl/lib

FROM ${BASE_IMAGE}
# A fixed non-root UID so Pod securityContext runAsNonRoot/runAsUser can pin it. The standard library gets its
# bytecode too (the official image ships none; Debian's is compiled already, so this writes nothing there).
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin kubecrawl \
 && python3 -m compileall -q -j 0 -x '/(site|dist)-packages/' \
      "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
COPY --from=build /opt/kubecrawl /opt/kubecrawl
ENV PATH=/opt/kubecrawl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KUBECRAWL_LOG_FORMAT=json
ARG VERSION=dev
ARG REVISION=unknown
# RFC 3339, e.g. --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; not derived here so that builds stay
# reproducible (a timestamp in a layer's config changes the image id on every build).
ARG CREATED=""
# OCI image annotations (github.com/opencontainers/image-spec, annotations.md): registries, scanners and
# `crane config`/`skopeo inspect` show where the image comes from and which commit it is.
LABEL org.opencontainers.image.title="kubecrawl" \
      org.opencontainers.image.description="Web page metadata on demand and scheduled site crawls on Kubernetes: API, workers and operator in one image" \
      org.opencontainers.image.url="https://github.com/kubecrawl/kubecrawl" \
      org.opencontainers.image.documentation="https://github.com/kubecrawl/kubecrawl/tree/main/docs" \
      org.opencontainers.image.source="https://github.com/kubecrawl/kubecrawl" \
      org.opencontainers.image.vendor="kubecrawl" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
USER 10001
WORKDIR /tmp
EXPOSE 8000 9100
ENTRYPOINT ["kubecrawl"]
CMD ["--help"]
