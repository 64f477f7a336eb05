# syntax=docker/dockerfile:1
# One image for every process of a deployment: the Dagster code location (the default command,
# as Dagster's Helm chart runs it), each run pod (K8sRunLauncher starts runs from the code
# location's image), the API and the cache worker:
#   docker build -t registry.example.com/crm-pipeline:0.1.0 .
#   docker run registry.example.com/crm-pipeline:0.1.0 crm-pipeline serve --host 0.0.0.0
#   docker run registry.example.com/crm-pipeline:0.1.0 crm-pipeline cache-worker
#   docker run registry.example.com/crm-pipeline:0.1.0 crm-pipeline config check
# Every package comes from requirements.lock, each file checked against the lock's hashes. The
# product only: no dev extras, no Graph API emulator. docs/deployment.md ("The image") says
# more; crm_pipeline_tests/test_dockerfile.py checks this file against the package, the lock
# and deploy/.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# No uv-managed Python and no cache in a layer; bytecode compiled now, as the runtime user
# cannot write it next to the code.
ENV UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements.lock ./
# uv at the version and hashes the lock pins (as `make` does), in a venv the runtime never sees.
RUN python -m venv /opt/uv \
    && awk '/^uv==/ { on = 1; print; next } on && /^ +--hash=/ { print; next } { on = 0 }' \
        requirements.lock > /tmp/uv-requirement.txt \
    && /opt/uv/bin/pip install --no-deps --require-hashes -r /tmp/uv-requirement.txt
RUN python -m venv --without-pip /opt/crm-pipeline
# The dependencies first, in their own layer (a code change does not reinstall them): every one
# must be in the lock with its hashes (--require-hashes), or the build fails.
COPY pyproject.toml README.md ./
RUN /opt/uv/bin/uv pip install --python /opt/crm-pipeline/bin/python --require-hashes \
    -c requirements.lock -r pyproject.toml
# Then the package itself, not editable, built with the lock's setuptools.
COPY crm_pipeline ./crm_pipeline
RUN /opt/uv/bin/uv pip install --python /opt/crm-pipeline/bin/python --no-deps --strict \
    --build-constraint requirements.lock .

FROM ${PYTHON_IMAGE} AS runtime
# A numeric user: Kubernetes can check runAsNonRoot only against a number, and deploy/ runs the
# pods as the same uid and gid (fsGroup makes the volumes writable for it where the storage
# supports it). Its home is the working directory; DAGSTER_HOME is where the instance ConfigMap
# is mounted (K8sRunLauncher's default, and the cache worker's), writable for Dagster's files.
RUN groupadd --system --gid 10001 crm \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/crm crm \
    && mkdir -p /opt/dagster/dagster_home \
    && chown 10001:10001 /opt/dagster/dagster_home
COPY --from=build /opt/crm-pipeline /opt/crm-pipeline
ENV PATH=/opt/crm-pipeline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CRM_ENV=production
USER 10001:10001
WORKDIR /home/crm
# 3030: the code location's gRPC port (deploy/helm/values.yaml); 8000: `crm-pipeline serve`.
EXPOSE 3030 8000
# No ENTRYPOINT: Dagster's chart and K8sRunLauncher start their commands as container args,
# which an ENTRYPOINT would receive as its own. dagster, uvicorn (`serve`) and `cache-worker`
# stop cleanly on SIGTERM as PID 1.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "crm_pipeline.definitions", "-a", "defs"]
