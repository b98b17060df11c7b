#!/usr/bin/env bash
# Run a slow end-to-end check (tools/check_NAME.sh) only when its inputs changed since it last passed.
#
#   tools/check_if_changed.sh NAME [--force]     # e.g. container, slurm
#
# .ci/checked/NAME.inputs lists the check's inputs, one git pathspec per line (the check script
# itself is always one). Their content hash is compared with .ci/checked/NAME.sha256, which this
# script writes after the check passed: commit that file with the change it verified. CI (.ci/run)
# calls this for every check, so a change to an input that was not checked and recorded is checked
# there. Exit status: the check's (0 when skipped).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name=${1:?usage: tools/check_if_changed.sh NAME [--force]}
force=${2:-}
inputs=".ci/checked/$name.inputs"
stamp=".ci/checked/$name.sha256"
check="tools/check_$name.sh"
[ -f "$inputs" ] || { echo "$inputs: no such file (the list of the check's inputs)" >&2; exit 64; }
[ -f "$check" ] || { echo "$check: no such file" >&2; exit 64; }

# The files the check reads: the tracked ones in a git checkout, else whatever is on disk.
input_files() {
  local specs
  mapfile -t specs < <(grep -v '^\s*\(#\|$\)' "$inputs")
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z -- "$check" "$inputs" "${specs[@]}"
  else
    find "$check" "$inputs" "${specs[@]}" -type f -print0 2>/dev/null
  fi
}

inputs_hash() {
  input_files | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

now=$(inputs_hash)
if [ "$force" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$now" ]; then
  echo "$name check: inputs unchanged since it last passed ($stamp); skipped"
  exit 0
fi
echo "$name check: inputs changed since it last passed (or --force); running $check"
start=$SECONDS
bash "$check"
echo "$now" > "$stamp"
echo "$name check passed in $((SECONDS - start)) s; recorded in $stamp"
