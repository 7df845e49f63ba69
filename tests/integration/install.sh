#!/usr/bin/env bash
# Embedding coring from outside the source tree, the two documented ways:
#  1. `meson install`, then a program built with `pkg-config --cflags --libs coring` (shared),
#     and one linked statically against libcoring.a (`pkg-config --static`);
#  2. coring as a meson subproject (`dependency('coring', fallback: ['coring', 'coring_dep'])`).
# Needs BUILD_DIR (a configured coring build whose prefix is private to it, as scripts/test.sh
# sets up). Prints "RESULT: N passed, M failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source_root=$(cd "$here/../.." && pwd)
build_dir=${BUILD_DIR:?BUILD_DIR must name a configured build directory}
passed=0
failed=0
check() {  # check NAME COMMAND...: runs it, counts it, shows its output when it fails
  local name=$1 output
  shift
  if output=$("$@" 2>&1); then
    echo "ok    $name"
    passed=$((passed + 1))
  else
    echo "FAIL  $name"
    echo "$output" | tail -30
    failed=$((failed + 1))
  fi
}

if [[ -n ${CORING_SANITIZED:-} ]]; then
  # The installed library would need the sanitizer runtime in every program linked to it.
  echo "RESULT: 0 passed, 0 failed (install checks run in the plain build only)"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/user.cpp" <<'CPP'
// A user program: a container, a coroutine, a channel, a timer.
#include <coring/coring.hpp>
#include <cstdio>
int main() {
  int sum = 0;
  int status = Co::run([&] {
    Co::Channel<int> channel(4);
    Co::create([&] {
      for (int i = 1; i <= 10; ++i) channel.push(i);
      channel.close();
    });
    Co::after(std::chrono::milliseconds(1), [&] { sum += 100; });
    while (auto value = channel.pop()) sum += *value;
    Co::this_coroutine::sleep(std::chrono::milliseconds(5));
  });
  std::printf("status=%d sum=%d\n", status, sum);
  return status == 0 && sum == 155 ? 0 : 1;
}
CPP

install_and_find_pc() {
  meson install -C "$build_dir" --no-rebuild --quiet >"$work/install.log" 2>&1 || {
    cat "$work/install.log"
    return 1
  }
  pc=$(find "$build_dir/prefix" -name coring.pc | head -1)
  [[ -n $pc ]] || { echo "no coring.pc under $build_dir/prefix"; return 1; }
}
check "meson install puts coring.pc under the prefix" install_and_find_pc
pc_dir=$(dirname "$(find "$build_dir/prefix" -name coring.pc | head -1)")
lib_dir=$(dirname "$pc_dir")
export PKG_CONFIG_PATH=$pc_dir

shared_program() {
  # shellcheck disable=SC2046
  g++ -o "$work/user_shared" "$work/user.cpp" $(pkg-config --cflags --libs coring) &&
    LD_LIBRARY_PATH=$lib_dir "$work/user_shared"
}
check "a program built with pkg-config --cflags --libs coring runs" shared_program

static_program() {
  # shellcheck disable=SC2046
  g++ -o "$work/user_static" "$work/user.cpp" $(pkg-config --cflags coring) \
    "$lib_dir/libcoring.a" $(pkg-config --static --libs-only-l --libs-only-other coring | sed 's/-lcoring//') &&
    ! ldd "$work/user_static" | grep -q libcoring && "$work/user_static"
}
check "a program linked statically with libcoring.a runs" static_program

standalone_headers() {
  # Each installed public header on its own, with both compilers the contract names.
  local include_dir header compiler
  include_dir=$(pkg-config --variable=includedir coring)
  for compiler in g++ clang++; do
    command -v "$compiler" >/dev/null || { echo "$compiler missing"; return 1; }
    for header in "$include_dir"/coring/*.hpp; do
      echo "#include <coring/$(basename "$header")>" >"$work/one_header.cpp"
      "$compiler" -std=c++20 -Wall -Wextra -Werror -fsyntax-only -I"$include_dir" \
        "$work/one_header.cpp" || { echo "$compiler: $header"; return 1; }
    done
  done
  # shellcheck disable=SC2046
  clang++ -o "$work/user_clang" "$work/user.cpp" $(pkg-config --cflags --libs coring) &&
    LD_LIBRARY_PATH=$lib_dir "$work/user_clang"
}
check "every public header compiles on its own with g++ 12 and clang 14; a clang build runs" \
  standalone_headers

odr_program() {
  # Two translation units of one program, one with CORING_NO_INLINE_SWITCH (as an ASan-built
  # unit gets too): each must get its own variant of the inline create/resume/yield, not one
  # name with two bodies of which the linker keeps either.
  cat >"$work/odr_a.cpp" <<'CPP'
#define CORING_NO_INLINE_SWITCH 1
#include <coring/coring.hpp>
static void nothing() {}
long start_nothing_out_of_line() { return Co::go(nothing); }  // go<void (&)()>, this variant
long start_yielder(const bool* stop, int* turns) {
  return Co::create([stop, turns] {
    while (!*stop) {
      ++*turns;
      Co::this_coroutine::yield();
    }
  });
}
bool resume_out_of_line(long cid) { return Co::resume(cid); }
CPP
  cat >"$work/odr_b.cpp" <<'CPP'
#include <coring/coring.hpp>
#include <cstdio>
long start_yielder(const bool* stop, int* turns);
bool resume_out_of_line(long cid);
long start_nothing_out_of_line();
static void nothing() {}
int main() {
  bool stop = false, ok = true;
  int turns = 0;
  int status = Co::run([&] {
    long cid = start_yielder(&stop, &turns);
    for (int i = 0; i < 100; ++i) ok &= Co::resume(cid) && resume_out_of_line(cid);
    stop = true;
    ok &= Co::resume(cid);
    ok &= Co::go(nothing) > 0 && start_nothing_out_of_line() > 0;  // the same go<void (&)()>
  });
  std::printf("status=%d turns=%d\n", status, turns);
  return status == 0 && ok && turns == 201 ? 0 : 1;
}
CPP
  # -O0: the inline functions are emitted out of line, where the linker would merge them.
  # shellcheck disable=SC2046
  g++ -O0 -o "$work/odr" "$work/odr_a.cpp" "$work/odr_b.cpp" $(pkg-config --cflags --libs coring) ||
    return 1
  local symbols
  symbols=$(nm -C "$work/odr")
  # go<void (&)()> is instantiated in both units: two variants, two names.
  grep -q 'coring::out_of_line_switch::go<void (&)()>' <<<"$symbols" &&
    grep -q 'coring::inline_switch::go<void (&)()>' <<<"$symbols" || {
    echo "expected both variants of coring::go<void (&)()> in the program:"
    grep 'go<' <<<"$symbols"
    return 1
  }
  LD_LIBRARY_PATH=$lib_dir "$work/odr"
}
check "units built with and without CORING_NO_INLINE_SWITCH link into one program (no ODR clash)" \
  odr_program

subproject_program() {
  local project=$work/subproject_user
  mkdir -p "$project/subprojects"
  ln -s "$source_root" "$project/subprojects/coring"
  cp "$work/user.cpp" "$project/user.cpp"
  cat >"$project/meson.build" <<'MESON'
project('user', 'cpp', default_options: ['cpp_std=c++20'])
coring = dependency('coring', fallback: ['coring', 'coring_dep'],
                    default_options: ['tests=false', 'benchmarks=false', 'samples=false'])
executable('user', 'user.cpp', dependencies: coring)
MESON
  # An empty PKG_CONFIG_PATH and forcefallback make sure the subproject is what is used.
  PKG_CONFIG_PATH= meson setup "$project/build" "$project" --wrap-mode=forcefallback >/dev/null &&
    ninja -C "$project/build" >/dev/null && "$project/build/user"
}
check "a meson project using coring as a subproject (coring_dep) runs" subproject_program

echo "RESULT: $passed passed, $failed failed"
((failed == 0))
