#!/bin/sh
# Build tagproxy's wheel from a source tree and install it, with its
# dependencies, into a fresh virtual environment:
#
#     deploy/docker/install.sh SOURCE_DIR VENV_DIR
#
# The Dockerfile's build stage runs exactly this, and tests/test_deploy.py runs
# it too (into a temporary directory), so what the image installs is what the
# test suite installs and starts.
set -eu

src=${1:?usage: install.sh SOURCE_DIR VENV_DIR}
venv=${2:?usage: install.sh SOURCE_DIR VENV_DIR}
python=${PYTHON:-python3}

dist=$(mktemp -d)
trap 'rm -rf "$dist"' EXIT

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
"$venv/bin/python" -m pip wheel --quiet --no-cache-dir --no-deps \
    --wheel-dir "$dist" "$src"
"$venv/bin/python" -m pip install --quiet --no-cache-dir "$dist"/tagproxy-*.whl
"$venv/bin/tagproxy" --version
