# Shipyard: the agent and the server in one small image, running as an unprivileged user.
#
#   docker build -t shipyard:0.1.0 .
#   docker build --build-arg BASE=python:3.11-slim-bookworm -t shipyard .
#
# BASE: any Debian-based image with python3 (>= 3.11: the build reads pyproject.toml with tomllib),
# its venv module, and git (tasks are checked out with it).
#
# CI builds BASE locally (scripts/build-base-image.sh: debootstrap + docker import), since no image
# registry is reachable there. Run it:
#
#   docker run --rm shipyard --version
#   docker run -d -p 8008:8008 -p 8081:8081 -p 8080:8080 -v shipyard-data:/var/lib/shipyard \
#       shipyard server --host 0.0.0.0
#   docker run -d -v /etc/shipyard/clearml.conf:/etc/shipyard/clearml.conf:ro \
#       -e CLEARML_CONFIG_FILE=/etc/shipyard/clearml.conf shipyard daemon --queue default
#
# Docker mode (tasks in sibling containers of the host's engine): see docs/operations.md, "The
# agent in a container": the host's socket, its group id, and the work dir at the same path.
ARG BASE=shipyard-test/python:bookworm

FROM ${BASE} AS build
# Extras of the project to install (comma-separated): postgres for a PostgreSQL-backed server.
ARG EXTRAS=postgres
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a code change then rebuilds only the last layer.
COPY pyproject.toml README.md ./
RUN python3 -m venv /opt/shipyard \
 && python3 -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[1].split(",") if e]; \
print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' \
        "${EXTRAS}" > /tmp/requirements.txt \
 && /opt/shipyard/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
        -r /tmp/requirements.txt "setuptools>=68" wheel
COPY shipyard ./shipyard
COPY agent ./agent
COPY sandbox ./sandbox
COPY server ./server
COPY autoscaler ./autoscaler
COPY scheduler ./scheduler
RUN /opt/shipyard/bin/pip install --no-cache-dir --disable-pip-version-check --quiet --no-deps \
        --no-build-isolation /src \
 && /opt/shipyard/bin/pip uninstall --yes --quiet pip setuptools wheel

FROM ${BASE}
COPY --from=build /opt/shipyard /opt/shipyard
RUN groupadd --system --gid 10001 shipyard \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/shipyard --create-home \
        --shell /usr/sbin/nologin shipyard
ENV PATH=/opt/shipyard/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/var/lib/shipyard \
    PYTHONUNBUFFERED=1 \
    SHIPYARD_DATA_DIR=/var/lib/shipyard/server \
    SHIPYARD_WORK_DIR=/var/lib/shipyard/work \
    SHIPYARD_CACHE_DIR=/var/lib/shipyard/cache
USER shipyard
WORKDIR /var/lib/shipyard
EXPOSE 8008 8080 8081
ENTRYPOINT ["shipyard"]
CMD ["--help"]
