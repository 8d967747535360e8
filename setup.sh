#!/usr/bin/env bash
# Installs everything Deep Puppets needs on Debian 12 (run as root, or with sudo available):
#   - Debian packages: libgl1 + libegl1 (Mesa llvmpipe for headless ModernGL/EGL), libglib2.0-0 (OpenCV),
#     python3-venv, chromium (Debian's, with H.264: the browser test of the report drives it headless through
#     Playwright, which downloads no browser of its own);
#   - a virtual environment in .venv with the exact pins of requirements.txt (torch==2.13.0 = CPU build);
#   - this package, editable.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(libgl1 libegl1 libglib2.0-0 python3-venv chromium)
PYTHON=${PYTHON:-python3}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv and installing pinned Python packages (about 2 minutes)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  .venv/bin/python -m pip check
  echo "$want" >"$stamp"
fi
.venv/bin/python -c "import deep_puppets, mediapipe, moderngl, torch, av, cv2" \
  || { echo "setup: the environment in .venv is broken; delete .venv and rerun" >&2; exit 1; }
echo "setup: ready (.venv/bin/snakemake, .venv/bin/python)"
