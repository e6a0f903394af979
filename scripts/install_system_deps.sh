#!/usr/bin/env bash
# Debian packages that napari/Qt need to run under a virtual X server (Xvfb) with software OpenGL,
# and the C++ compiler that torch.compile's CPU backend (Enhancer(compile=True)) builds kernels with.
set -euo pipefail
packages=(
  xvfb libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libfontconfig1 libfreetype6 libdbus-1-3
  libglib2.0-0 libx11-xcb1 libxkbcommon0 libxkbcommon-x11-0 libxcb1 libxcb-cursor0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0
  libxcb-shm0 libxcb-sync1 libxcb-util1 libxcb-xfixes0 libxcb-xkb1 g++
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages for Xvfb/Qt: already installed"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
