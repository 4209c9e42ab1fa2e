# lokal's image: Python 3.11 slim, lokal installed non-editably into /opt/lokal, no build tools left.
# Build: docker build -t <registry>/lokal:<tag> .   (then: kustomize edit set image lokal=<registry>/lokal:<tag>)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: build lokal's wheel and install it with its pinned dependencies into a virtualenv.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
# Every dependency comes as a binary wheel (--only-binary): no compiler is needed here, so none can leak
# into the image. lokal itself is pure Python and is built as a wheel, then installed like any package.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/lokal \
 && /opt/lokal/bin/pip install --only-binary=:all: /wheels/lokal-*.whl \
 && /opt/lokal/bin/pip uninstall -y pip setuptools

# Stage 2: the runtime. Only the virtualenv is copied; it links to this same base image's interpreter.
FROM ${PYTHON_IMAGE}
# No installer in the final image either; bytecode was compiled at install time (the root filesystem is
# read-only in the DaemonSet, so nothing could be written later).
RUN python -m pip uninstall -y pip setuptools wheel 2>/dev/null; rm -rf /root/.cache
COPY --from=build /opt/lokal /opt/lokal
ENV PATH=/opt/lokal/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root on purpose: the containerd content store is 0700 root. The DaemonSet drops every capability.
USER 0:0
EXPOSE 5050
ENTRYPOINT ["lokal"]
CMD ["--help"]
