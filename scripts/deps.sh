# shellcheck shell=bash
# The one list of Debian 12 packages qimg needs to build and test.
# Sourced by scripts/setup-and-demo.sh and .ci/run; edit it here only.

QIMG_APT_PACKAGES=(
  cmake ninja-build g++ pkg-config          # toolchain
  libcli11-dev libfmt-dev                   # CLI
  zlib1g-dev libzstd-dev libssl-dev         # compression, encryption
  nlohmann-json3-dev                        # JSON output
  doctest-dev                               # unit tests
  qemu-utils python3                        # interoperability and end-to-end tests
  clang libclang-rt-14-dev                  # fuzz targets (libFuzzer)
)

# Prints the packages of QIMG_APT_PACKAGES that are not installed.
qimg_missing_packages() {
  local p
  for p in "${QIMG_APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      echo "$p"
    fi
  done
}

# apt-get update + install of the whole list (needs root).
qimg_apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing packages needs root (run as root or install: ${QIMG_APT_PACKAGES[*]})" >&2
    return 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${QIMG_APT_PACKAGES[@]}"
}

# Installs only when something is missing.
qimg_install_missing() {
  local missing
  missing=$(qimg_missing_packages)
  if [ -z "$missing" ]; then
    echo "== all build dependencies are installed"
    return 0
  fi
  echo "== installing missing packages:" $missing
  qimg_apt_install
}
