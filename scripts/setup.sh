#!/usr/bin/env bash
# scripts/setup.sh — installs moetool's build and test dependencies from Debian packages.
# Idempotent: installs only what is missing; uses sudo when not root.
set -euo pipefail

PKGS=(build-essential cmake pkg-config libeigen3-dev nlohmann-json3-dev libcli11-dev libopenblas-dev
      liblapack-dev libicu-dev libglpk-dev libyaml-cpp-dev libgtest-dev libgmock-dev clang libclang-rt-dev python3
      chromium-headless-shell)  # headless Chromium renders report.html in the tests

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all dependencies present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
