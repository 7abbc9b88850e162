# One image, every role: `kubecrawl api | worker | operator | trigger | migrate | standalone | crawl`.
# Build: docker build -t kubecrawl:dev .   (no Docker engine runs on the CI machines; the chart's tests use
# the same entry points as local processes).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Bytecode is compiled here, once: the pods run with a read-only root filesystem (and PYTHONDONTWRITEBYTECODE), so
# a process could never cache it and would recompile every module at each start (seconds of CPU per pod and per
# CrawlSite trigger run).
RUN python -m venv /opt/kubecrawl && /opt/kubecrawl/bin/pip install .

FROM python:3.11-slim-bookworm
# A fixed non-root UID so Pod securityContext runAsNonRoot/runAsUser can pin it.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin kubecrawl
COPY --from=build /opt/kubecrawl /opt/kubecrawl
ENV PATH=/opt/kubecrawl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KUBECRAWL_LOG_FORMAT=json
USER 10001
WORKDIR /tmp
EXPOSE 8000 9100
ENTRYPOINT ["kubecrawl"]
CMD ["--help"]
