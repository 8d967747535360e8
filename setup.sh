#!/usr/bin/env bash
# Installs everything Deep Puppets needs on Debian 12 (run as root, or with sudo available):
#   - Debian packages: libgl1 + libegl1 (Mesa llvmpipe for headless ModernGL/EGL), libglib2.0-0 (OpenCV),
#     python3-venv, chromium (Debian's, with H.264: the browser test of the report drives it headless through
#     Playwright, which downloads no browser of its own);
#   - a virtual environment in .venv with the exact pins of requirements.txt (torch==2.13.0 = CPU build);
#   - this package, editable (and its `deep-puppets` command, .venv/bin/deep-puppets).
# Idempotent: a second run only checks.
#
#   bash setup.sh          CPU build of torch (the default)
#   bash setup.sh --gpu    a CUDA build of torch instead (requirements-gpu.txt; NVIDIA driver needed), for
#                          `preset: gpu`; running it again without --gpu goes back to the CPU build
set -euo pipefail
cd "$(dirname "$0")"

GPU=0
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$arg' (use --gpu or --help)" >&2; exit 2 ;;
  esac
done

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

# The stamp records what was installed (the pins and the build: cpu or gpu); a change reinstalls.
stamp=.venv/.requirements.sha256
build=$([ "$GPU" = 1 ] && echo gpu || echo cpu)
want=$( (sha256sum requirements.txt requirements-gpu.txt pyproject.toml; echo "$build") | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv and installing pinned Python packages, $build build of torch (about 2 minutes)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  if [ "$GPU" = 1 ]; then
    # every pin of requirements.txt but torch's, then the CUDA build's pin
    grep -v '^torch==' requirements.txt >.venv/.requirements-no-torch.txt
    .venv/bin/python -m pip install -q --disable-pip-version-check -r .venv/.requirements-no-torch.txt -r requirements-gpu.txt
  else
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  .venv/bin/python -m pip check
  echo "$want" >"$stamp"
fi
.venv/bin/python -c "import deep_puppets, mediapipe, moderngl, torch, av, cv2" \
  || { echo "setup: the environment in .venv is broken; delete .venv and rerun" >&2; exit 1; }
if [ "$GPU" = 1 ]; then
  .venv/bin/python -c "import torch; print('setup: torch', torch.__version__, 'CUDA', torch.version.cuda, '- GPU visible:', torch.cuda.is_available())"
fi
echo "setup: ready (.venv/bin/deep-puppets, .venv/bin/snakemake, .venv/bin/python)"
