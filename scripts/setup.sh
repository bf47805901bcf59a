#!/usr/bin/env bash
# Installs everything llmops and its tests need on a fresh machine:
# Debian packages (the local OCI registry, Prometheus, skopeo) when run as root,
# and a virtual environment at .venv with the project and its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
[ -x /bin/busybox ] || need_apt+=(busybox-static)  # modelcar test base image
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # renders the release report in its test
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)  # cluster-in-a-box: per-task mount namespaces
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts these as system services on install; the tests start their own.
    for svc in docker-registry prometheus prometheus-node-exporter; do
      (service "$svc" stop >/dev/null 2>&1 || true)
    done
  else
    echo "[setup] not root: skipping apt-get install ${need_apt[*]} (tests that need them will say so)" >&2
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.llmops-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] pip install -e .[dev] (first run takes a minute)"
  .venv/bin/pip install -q --upgrade pip
  # torch first, pinned, so no other package pulls a CUDA build
  .venv/bin/pip install -q 'torch==2.13.0'
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

# GuideLLM (the vLLM project's load client) pins click and multidict below what .venv has,
# so it gets a venv of its own; tests/integration/serving_runtime/test_guidellm.py and
# benchmarks/serving.py run its CLI from there.
GUIDELLM_VERSION=0.8.1
gl_stamp=.venv-guidellm/.llmops-guidellm-$GUIDELLM_VERSION
if [ ! -f "$gl_stamp" ]; then
  echo "[setup] creating .venv-guidellm (guidellm $GUIDELLM_VERSION)"
  [ -x .venv-guidellm/bin/python ] || "$PY" -m venv .venv-guidellm
  .venv-guidellm/bin/pip install -q 'torch==2.13.0'  # the CPU build on disk, not a CUDA download
  .venv-guidellm/bin/pip install -q "guidellm==$GUIDELLM_VERSION"
  touch "$gl_stamp"
fi
