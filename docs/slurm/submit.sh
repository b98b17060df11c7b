#!/bin/bash
# Queue a whole study: one participant-level array task per sub-* folder, then the group level,
# which starts only when every array task has succeeded (--dependency=afterok).
#
#   BIDS_DIR=/data/ms_study OUTPUT_DIR=/data/ms_study/derivatives/bids_mdpp IMAGE=$HOME/bids_mdpp.sif \
#     bash docs/slurm/submit.sh [more bids_mdpp participant options]
#
# Without IMAGE the jobs run the installed bids_mdpp: the one on PATH (module load …, or
# source VENV/bin/activate before submitting) or the command BIDS_MDPP names; it is looked up
# here, once, and passed to the jobs by its absolute path.
# MAX_PARALLEL (default 50) caps how many array tasks run at once.  SBATCH_OPTIONS (optional) is
# added to both sbatch calls, e.g. "--account=neuro --partition=short" or "--cpus-per-task=2 --mem=6G".
# Use afterany instead of afterok in the last sbatch call to run the group level even when some
# participants failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${BIDS_DIR:?set BIDS_DIR to the BIDS dataset}"
: "${OUTPUT_DIR:?set OUTPUT_DIR to the output (derivatives) folder}"
if [ -n "${IMAGE:-}" ]; then
  export IMAGE
else
  app=$(command -v "${BIDS_MDPP:-bids_mdpp}") \
    || { echo "no IMAGE and no command ${BIDS_MDPP:-bids_mdpp}: set IMAGE to the .sif image, or put an" \
              "installed bids_mdpp on PATH (module load …, source VENV/bin/activate) or name it in BIDS_MDPP" >&2
         exit 69; }
  case "$app" in /*) ;; *) app="$PWD/$app" ;; esac
  export BIDS_MDPP="$app"
fi
export BIDS_DIR OUTPUT_DIR

n=$(find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' | wc -l)
if [ "$n" -eq 0 ]; then
  echo "no sub-* folders in $BIDS_DIR" >&2
  exit 66
fi
read -r -a sbatch_options <<< "${SBATCH_OPTIONS:-}"
# --parsable prints "jobid" or "jobid;cluster".
array=$(sbatch --parsable "${sbatch_options[@]}" --array="1-$n%${MAX_PARALLEL:-50}" \
        "$here/participant.sbatch" "$@")
array=${array%%;*}
group=$(sbatch --parsable "${sbatch_options[@]}" --dependency="afterok:$array" "$here/group.sbatch")
group=${group%%;*}
echo "participant level: job array $array ($n tasks); group level: job $group (waits for $array)"
