# Sourced by scripts/demo, scripts/test and scripts/bench: installs the
# Debian 12 packages rill needs, only those missing (idempotent).
RILL_PACKAGES=(
  build-essential cmake ninja-build pkg-config clang
  libboost-dev libconcurrentqueue-dev liblmdb-dev catch2 libbenchmark-dev nlohmann-json3-dev
)

rill_install_deps() {
  local missing=()
  for pkg in "${RILL_PACKAGES[@]}" "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "rill: installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

rill_jobs() { nproc 2>/dev/null || echo 2; }
