#!/usr/bin/env bash
# The README's "Embedding" commands exactly as written, with default options, on a clean copy of
# the source tree (what git tracks, plus new files it does not ignore: no build directories),
# then the README's example (samples/quickstart.cpp) compiled with the README's g++ line against
# the install through pkg-config, and run. The install goes to a DESTDIR, so that the test
# never writes to /usr/local; pkg-config is pointed at it with PKG_CONFIG_SYSROOT_DIR.
# Prints "RESULT: N passed, M failed".
set -uo pipefail
if [[ -n ${CORING_SANITIZED:-} ]]; then
  echo "RESULT: 0 passed, 0 failed (the default build is checked in the plain pass only)"
  exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
source_root=$(cd "$here/../.." && pwd)
passed=0
failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() {  # check NAME COMMAND...
  local name=$1 output
  shift
  if output=$("$@" 2>&1); then
    echo "ok    $name"
    passed=$((passed + 1))
  else
    echo "FAIL  $name"
    echo "$output" | tail -40
    failed=$((failed + 1))
  fi
}

clean_copy() {
  mkdir -p "$work/src"
  if git -C "$source_root" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$source_root" && git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' file; do
        [[ -e $file ]] && printf '%s\0' "$file"  # skip files deleted in the work tree
      done | xargs -0 cp --parents -t "$work/src")
  else
    cp -a "$source_root/." "$work/src" && rm -rf "$work/src"/build*
  fi
  [[ -f $work/src/meson.build ]]
}
check "a clean copy of the source tree" clean_copy

readme_build() {
  # README, "Embedding", word for word (the install step below adds only DESTDIR).
  cd "$work/src" && meson setup build && ninja -C build
}
check "meson setup build && ninja -C build (default options, as the README says)" readme_build

readme_install() {
  cd "$work/src" && DESTDIR=$work/root meson install -C build
}
check "meson install -C build (into a DESTDIR)" readme_install

readme_program() {
  local pc
  pc=$(find "$work/root" -name coring.pc | head -1)
  [[ -n $pc ]] || { echo "no coring.pc installed"; return 1; }
  local library
  library=$(find "$work/root" -name 'libcoring.so*' | head -1)
  cp "$work/src/samples/quickstart.cpp" "$work/app.cpp"
  cd "$work" || return 1
  # shellcheck disable=SC2046  # the README's line
  PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$work/root \
    g++ -o app app.cpp $(PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$work/root \
    pkg-config --cflags --libs coring) || return 1
  local output
  output=$(LD_LIBRARY_PATH=$(dirname "$library") ./app) || { echo "$output"; return 1; }
  echo "$output"
  [[ $output == hello ]]
}
check "the README's example, built with g++ ... \$(pkg-config --cflags --libs coring), prints hello" \
  readme_program

echo "RESULT: $passed passed, $failed failed"
((failed == 0))
