#!/usr/bin/env bash
# Installs everything mmembed needs on a fresh Debian machine: the system packages that carry
# the offline benchmark's assets, CPU torch + torchvision, and the package with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(fonts-noto-color-emoji fonts-dejavu-core unicode-cldr-core ruby-gemojione wordnet-base chromium chromium-driver)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# torch/torchvision first and pinned as a pair (PyPI's torchvision needs the matching torch).
$PY -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
$PY -m pip install -q -e ".[dev]"
