#!/usr/bin/env bash
# Installs every Debian package moebench needs to build, test and run. Idempotent: quiet
# and quick when everything is already there. Needs root (or sudo) only when installing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  openmpi-bin libopenmpi-dev          # MPI (CPU backend and launcher)
  libhdf5-openmpi-dev hdf5-tools      # parallel HDF5 traces; h5dump
  libboost-program-options-dev        # command line and INI configs
  libopenblas-dev                     # BLAS for the expert and router GEMMs
  libgtest-dev                        # unit and MPI tests
  libsentencepiece-dev                # BPE tokenizer (moebench data --tokenizer bpe)
  python3 python3-h5py python3-numpy  # trace checks in tests, analysis tools
  python3-matplotlib                  # analysis/figures.py
  python3-torch                       # PyTorch reference of the model (tests/cli/torch_reference.sh)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
