#!/usr/bin/env bash
# Builds tests/package against rill three ways: installed (find_package),
# as a subdirectory, and with pkg-config; runs each result.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cmake -S "$root" -B "$work/rill-build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$work/prefix" \
  -DRILL_BUILD_TESTS=OFF -DRILL_BUILD_BENCH=OFF -DRILL_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$work/rill-build" >/dev/null
cmake --install "$work/rill-build" >/dev/null

cmake -S "$root/tests/package" -B "$work/fp" -G Ninja -DRILL_PACKAGE_MODE=find_package \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/fp" >/dev/null
"$work/fp/hello_rill"

cmake -S "$root/tests/package" -B "$work/sub" -G Ninja -DRILL_PACKAGE_MODE=subdirectory >/dev/null
cmake --build "$work/sub" >/dev/null
"$work/sub/hello_rill"

PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig:$work/prefix/lib/x86_64-linux-gnu/pkgconfig" \
  sh -c "c++ '$root/tests/package/main.cpp' -o '$work/hello_pc' \$(pkg-config --cflags --libs rill)"
"$work/hello_pc"
echo "package test: find_package, add_subdirectory and pkg-config all work"
