#!/usr/bin/env bash
# Installs everything seqmix needs to build and test, from Debian packages only.
# Idempotent: re-running it is cheap once the packages are present.
set -euo pipefail
packages=(
  g++ cmake make pkg-config
  libdnnl-dev libhdf5-dev hdf5-tools
  libspdlog-dev libfmt-dev libgtest-dev
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
  # sanitizer build and libFuzzer targets (clang's runtime)
  clang libclang-rt-14-dev
  # the Python bridge (python/seqmix_torch), its tests, and seqmix plot (matplotlib);
  # run with Debian's /usr/bin/python3. libopenblas0-pthread keeps torch fast on CPU.
  python3 python3-torch python3-numpy python3-h5py python3-yaml python3-matplotlib
  libopenblas0-pthread
  # data-parallel training (mpirun -np N seqmix train) and its tests
  libopenmpi-dev openmpi-bin
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update
  $sudo_cmd apt-get install -y --no-install-recommends "${missing[@]}"
fi
