#!/usr/bin/env bash
# Installs the Debian packages that coring's build, tests and benchmarks need, and nothing
# else. Idempotent: when everything is present it only runs dpkg-query and exits 0; it runs
# `apt-get update` only when something is missing. Needs root (or sudo) only in that case.
#
# Exit status: 0 when nothing was missing or apt-get installed what was, 1 otherwise (with
# one line on stderr that says why). apt-get's own status decides: when it reports success
# but dpkg-query still does not list a package (a name dpkg knows under another spelling, a
# wrapped or stubbed apt-get), deps.sh says so on stderr and exits 0; the build that needs the
# package then names what is missing. Works as root, and as a user with sudo (DEBIAN_FRONTEND is passed
# through sudo, which drops exported variables). Where a policy-rc.d already exists (every
# Debian Docker image ships one) it is left alone; otherwise one is put in place for the
# duration of the install, so that nginx's package does not start the system service.
#
# CORING_POLICY_RC_D overrides the policy file's path (tests/integration/deps.sh uses it).
set -euo pipefail

packages=(
  # build
  g++ clang meson ninja-build pkg-config
  libboost-context-dev liburing-dev libabsl-dev node-llhttp zlib1g-dev libssl-dev
  # tests and benchmarks (procps: pgrep; util-linux: taskset)
  doctest-dev libbenchmark-dev curl nginx-light wrk golang-go libboost-fiber-dev procps
  util-linux apache2-utils openssl slowhttptest
)

missing_packages() {
  local package status
  for package in "${packages[@]}"; do
    # Both the short and the long form of the status: "ii " or "install ok installed".
    status=$(dpkg-query -W -f='${db:Status-Abbrev}|${Status}' "$package" 2>/dev/null || true)
    [[ $status == ii* || $status == *"install ok installed"* ]] || echo "$package"
  done
}

mapfile -t missing < <(missing_packages)
((${#missing[@]} == 0)) && exit 0

echo "deps: installing ${missing[*]}" >&2
as_root=()
if [[ $(id -u) != 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "deps: not root and no sudo: as root, run apt-get install ${missing[*]}" >&2
    exit 1
  fi
  as_root=(sudo)
fi
# `env` inside the privileged command: sudo resets the environment, so an exported variable
# would not reach apt-get and dpkg would ask its questions on a terminal nobody watches.
as_root+=(env DEBIAN_FRONTEND=noninteractive)

policy=${CORING_POLICY_RC_D:-/usr/sbin/policy-rc.d}
made_policy=0
remove_policy() {
  if ((made_policy)); then "${as_root[@]}" rm -f "$policy" || true; fi
}
trap remove_policy EXIT
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  made_policy=1
  "${as_root[@]}" chmod +x "$policy"
fi

"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

mapfile -t still_missing < <(missing_packages)
if ((${#still_missing[@]} > 0)); then
  echo "deps: apt-get reported success, but dpkg-query does not list ${still_missing[*]} as" \
    "installed" >&2
fi
exit 0
