#!/usr/bin/env bash
# Installs the Debian packages that coring's build, tests and benchmarks need, and nothing
# else. Idempotent: when everything is present it only runs dpkg-query and exits; it runs
# `apt-get update` only when something is missing. Needs root (or sudo) only in that case.
set -euo pipefail

packages=(
  # build
  g++ clang meson ninja-build pkg-config
  libboost-context-dev liburing-dev libabsl-dev node-llhttp zlib1g-dev
  # tests and benchmarks (procps: pgrep; util-linux: taskset)
  doctest-dev libbenchmark-dev curl nginx-light wrk golang-go libboost-fiber-dev procps
  util-linux
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null || true)
  [[ $status == ii* ]] || missing+=("$package")
done
((${#missing[@]} == 0)) && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo_cmd=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "deps: run as root to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# nginx's package starts the system service on install; our tests start their own nginx on
# their own ports, so keep the service from starting (and from taking port 80) while we install.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
  "${sudo_cmd[@]}" chmod +x "$policy"
  made_policy=1
fi
cleanup() { ((made_policy)) && "${sudo_cmd[@]}" rm -f "$policy"; }
trap cleanup EXIT
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
