#!/usr/bin/env bash
# scripts/deps.sh on the machines users have, with stub apt-get, dpkg-query, id and sudo on
# PATH (nothing is installed for real): root or not, with or without sudo, with or without a
# policy-rc.d already in place (every Debian Docker image ships one), nothing missing, and an
# apt-get that fails. Prints "RESULT: N passed, M failed".
set -uo pipefail
if [[ -n ${CORING_SANITIZED:-} ]]; then
  echo "RESULT: 0 passed, 0 failed (a shell script: checked in the plain pass only)"
  exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
deps=$(cd "$here/../.." && pwd)/scripts/deps.sh
passed=0
failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Real tools deps.sh may use, reachable through a PATH that holds nothing else (so that a sudo
# installed on this machine cannot leak into the "no sudo" cases).
tools=$work/tools
mkdir -p "$tools"
for tool in bash env tee chmod rm cat mkdir grep sed; do
  ln -s "$(command -v "$tool")" "$tools/$tool"
done

# make_stubs DIR [sudo]: dpkg-query reports the packages listed in $STATE as installed;
# apt-get logs its calls (with DEBIAN_FRONTEND and whether the policy file exists) and marks
# what it installs; id reports $FAKE_UID; sudo, when asked for, behaves like the real one:
# it resets the environment (DEBIAN_FRONTEND among it) before running the command.
make_stubs() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/dpkg-query" <<'EOF'
#!/usr/bin/env bash
package=${!#}
# DPKG_LONG: answer with the long status, as a dpkg-query that ignores -f would.
grep -qx "$package" "$STATE" || exit 1
[[ -n ${DPKG_LONG:-} ]] && printf 'install ok installed' || printf 'ii '
EOF
  cat >"$dir/apt-get" <<'EOF'
#!/usr/bin/env bash
policy="absent"
[[ -x $POLICY ]] && policy="$(cat "$POLICY" | grep -c 'exit 101') exit-101-lines"
echo "apt-get $* | DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-unset} | policy: $policy | uid: ${FAKE_UID:-unset}" >>"$LOG"
[[ -n ${APT_FAIL:-} && $1 == install ]] && exit 100
# APT_NOOP: succeeds without dpkg-query seeing the result (a wrapped or stubbed apt-get).
if [[ $1 == install && -z ${APT_NOOP:-} ]]; then
  for arg in "$@"; do [[ $arg == -* || $arg == install ]] || echo "$arg" >>"$STATE"; done
fi
exit 0
EOF
  cat >"$dir/id" <<'EOF'
#!/usr/bin/env bash
echo "${FAKE_UID:-0}"
EOF
  if [[ ${2:-} == sudo ]]; then
    cat >"$dir/sudo" <<'EOF'
#!/usr/bin/env bash
echo "sudo $*" >>"$LOG"
exec env -i PATH="$PATH" STATE="$STATE" LOG="$LOG" POLICY="$POLICY" FAKE_UID=0 \
  APT_FAIL="${APT_FAIL:-}" "$@"
EOF
  fi
  chmod +x "$dir"/*
}

# scenario NAME UID SUDO(yes|no) POLICY(present|absent) INSTALLED(all|some): runs deps.sh and
# leaves its exit status in $status, its stderr in $case_dir/stderr, the apt-get log in
# $case_dir/log.
scenario() {
  local name=$1 uid=$2 with_sudo=$3 policy_state=$4 installed=$5
  case_dir=$work/$name
  mkdir -p "$case_dir"
  make_stubs "$case_dir/bin" "$([[ $with_sudo == yes ]] && echo sudo)"
  : >"$case_dir/state"
  : >"$case_dir/log"
  if [[ $installed == all ]]; then
    # Every package deps.sh asks for (the list is read from the script itself).
    sed -n '/^packages=(/,/^)/p' "$deps" | grep -v '^ *#' | tr ' ()' '\n\n\n' |
      grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -v '^packages$' >"$case_dir/state"
  elif [[ $installed == all-but-one ]]; then
    # A machine that has everything but one package (the one a newer checkout added).
    sed -n '/^packages=(/,/^)/p' "$deps" | grep -v '^ *#' | tr ' ()' '\n\n\n' |
      grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -v '^packages$' | sed '$d' >"$case_dir/state"
  else
    echo g++ >"$case_dir/state"
  fi
  policy_file=$case_dir/policy-rc.d
  if [[ $policy_state == present ]]; then
    printf '#!/bin/sh\n# the image'"'"'s own\nexit 101\n' >"$policy_file"
    chmod +x "$policy_file"
    cp "$policy_file" "$case_dir/policy.before"
  fi
  env -i PATH="$case_dir/bin:$tools" HOME="$case_dir" STATE="$case_dir/state" \
    LOG="$case_dir/log" POLICY="$policy_file" FAKE_UID="$uid" APT_FAIL="${APT_FAIL:-}" \
    APT_NOOP="${APT_NOOP:-}" DPKG_LONG="${DPKG_LONG:-}" \
    CORING_POLICY_RC_D="$policy_file" bash "$deps" >"$case_dir/stdout" 2>"$case_dir/stderr"
  status=$?
}

check() {  # check DESCRIPTION CONDITION...
  local description=$1
  shift
  if "$@"; then
    echo "ok    $description"
    passed=$((passed + 1))
  else
    echo "FAIL  $description"
    echo "  exit status: $status"
    sed 's/^/  stderr: /' "$case_dir/stderr" | tail -5
    sed 's/^/  log:    /' "$case_dir/log" | tail -5
    failed=$((failed + 1))
  fi
}

installs_with_frontend() { grep -q '^apt-get install .* | DEBIAN_FRONTEND=noninteractive |' "$case_dir/log"; }
updated_first() { head -1 "$case_dir/log" | grep -q '^apt-get update'; }
policy_kept() { cmp -s "$case_dir/policy.before" "$policy_file"; }
policy_gone() { [[ ! -e $policy_file ]]; }
policy_during_install() { grep -q '^apt-get install .* | policy: 1 exit-101-lines' "$case_dir/log"; }
no_apt_calls() { ! grep -q '^apt-get' "$case_dir/log"; }
exit_is() { ((status == $1)); }
through_sudo() { grep -q '^sudo env DEBIAN_FRONTEND=noninteractive apt-get install' "$case_dir/log"; }

scenario root-with-policy 0 no present some
check "root, policy-rc.d already there (Docker): exit 0" exit_is 0
check "root, policy-rc.d already there: apt-get update, then install with DEBIAN_FRONTEND" \
  eval 'updated_first && installs_with_frontend'
check "root, policy-rc.d already there: the image's file is left as it was" policy_kept

scenario root-without-policy 0 no absent some
check "root, no policy-rc.d: exit 0" exit_is 0
check "root, no policy-rc.d: one that refuses service starts is in place during the install" \
  policy_during_install
check "root, no policy-rc.d: the one deps.sh made is removed afterwards" policy_gone

scenario user-sudo-without-policy 1000 yes absent some
check "non-root with sudo: exit 0" exit_is 0
check "non-root with sudo: apt-get runs through sudo and still sees DEBIAN_FRONTEND" \
  eval 'through_sudo && installs_with_frontend'
check "non-root with sudo: the policy file is in place during the install, removed after" \
  eval 'policy_during_install && policy_gone'

scenario user-sudo-with-policy 1000 yes present some
check "non-root with sudo, policy-rc.d already there: exit 0, file kept" \
  eval 'exit_is 0 && policy_kept && installs_with_frontend'

scenario user-without-sudo 1000 no absent some
check "non-root without sudo, packages missing: exit 1 with a message that says what to do" \
  eval 'exit_is 1 && grep -q "not root and no sudo" "$case_dir/stderr" && no_apt_calls'
check "non-root without sudo: no policy file left behind" policy_gone

scenario user-all-installed 1000 no absent all
check "non-root, everything installed: exit 0 without apt-get or sudo" \
  eval 'exit_is 0 && no_apt_calls && [[ ! -s $case_dir/stderr ]]'

scenario root-all-installed 0 no present all
check "root, everything installed, policy there: exit 0, nothing touched" \
  eval 'exit_is 0 && no_apt_calls && policy_kept'

scenario docker-one-missing 0 no present all-but-one
check "root, policy-rc.d there, one package missing (Docker, new checkout): exit 0, one install" \
  eval 'exit_is 0 && policy_kept && [[ $(grep -c "^apt-get install" "$case_dir/log") == 1 ]]'

DPKG_LONG=1 scenario docker-long-status 0 no present all-but-one
check "dpkg-query answering 'install ok installed': installed is installed, exit 0" \
  eval 'exit_is 0 && policy_kept'

APT_NOOP=1 scenario docker-apt-noop 0 no present all-but-one
check "apt-get succeeds but dpkg-query does not see it: exit 0 (apt-get decides), a warning" \
  eval 'exit_is 0 && policy_kept && grep -q "apt-get reported success" "$case_dir/stderr"'

APT_FAIL=1 scenario root-apt-fails 0 no absent some
check "apt-get install fails: exit non-zero, and the policy file deps.sh made is removed" \
  eval '((status != 0)) && policy_gone'

echo "RESULT: $passed passed, $failed failed"
((failed == 0))
