#!/bin/bash
# Queue a whole study: one participant-level array task per sub-* folder, then the group level,
# which starts only when every array task has succeeded (--dependency=afterok).
#
#   BIDS_DIR=/data/ms_study OUTPUT_DIR=/data/ms_study/derivatives/bids_mdpp IMAGE=$HOME/bids_mdpp.sif \
#     bash docs/slurm/submit.sh [more bids_mdpp participant options]
#
# MAX_PARALLEL (default 50) caps how many array tasks run at once.  Use afterany instead of afterok
# in the last sbatch call to run the group level even when some participants failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${BIDS_DIR:?set BIDS_DIR to the BIDS dataset}"
: "${OUTPUT_DIR:?set OUTPUT_DIR to the output (derivatives) folder}"
: "${IMAGE:?set IMAGE to the bids_mdpp .sif image}"
export BIDS_DIR OUTPUT_DIR IMAGE

n=$(find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' | wc -l)
if [ "$n" -eq 0 ]; then
  echo "no sub-* folders in $BIDS_DIR" >&2
  exit 66
fi
# --parsable prints "jobid" or "jobid;cluster".
array=$(sbatch --parsable --array="1-$n%${MAX_PARALLEL:-50}" "$here/participant.sbatch" "$@")
array=${array%%;*}
group=$(sbatch --parsable --dependency="afterok:$array" "$here/group.sbatch")
group=${group%%;*}
echo "participant level: job array $array ($n tasks); group level: job $group (waits for $array)"
