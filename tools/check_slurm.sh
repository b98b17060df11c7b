#!/usr/bin/env bash
# The SLURM check: docs/slurm/ and docs/plugins/slurm.yml on a real single-node SLURM cluster, with
# the installed bids_mdpp (no container), as docs/hpc.md ("Testing the recipe on a single-node
# SLURM") tells a site to do.
#
#   bash tools/check_slurm.sh              # as root; or: bash tools/check_if_changed.sh slurm
#
# Stages: the cluster up (tools/slurm_cluster.sh) → a copy of the sample with two participants →
# submit.sh (participant array, group job after it) → a finished task resubmitted (skips) → a task
# cancelled half-way and resubmitted (resumes from WORK_ROOT) → train.sbatch (srun + torchrun, one
# tiny epoch) → one participant with Nipype's SLURM plugin (every preprocessing step an sbatch job)
# → the cluster down, also on failure.
#
# Environment:
#   BIDS_MDPP_VENV        the install to use (default: .venv beside this checkout, tools/install.sh)
#   BIDS_MDPP_CHECK_DIR   scratch folder (default /var/tmp/bids_mdpp-slurm-check); emptied first,
#                         removed after a pass, kept after a failure
#   SLURM_CHECK_TIMEOUT   seconds each wait for jobs may take (default 900)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
venv=${BIDS_MDPP_VENV:-$repo/.venv}
check=${BIDS_MDPP_CHECK_DIR:-/var/tmp/bids_mdpp-slurm-check}
timeout_s=${SLURM_CHECK_TIMEOUT:-900}
# The jobs fit a 2-CPU node: the scripts' defaults (4 CPUs, 8 GB) would never start there.
export SBATCH_OPTIONS="--cpus-per-task=1 --mem=4G"
# train.sbatch asks for 2 nodes with 4 GPUs each: here one CPU node.
train_options=(--nodes=1 --gpus-per-node=0 --cpus-per-task=2 --mem=8G)
stage_names=()
stage_seconds=()

say() { printf '\n== %s\n' "$*"; }
die() { printf '\nslurm check FAILED: %s (scratch kept: %s)\n' "$*" "$check" >&2; exit 1; }
# show COMMAND…: print the command (on stderr, so that $(show …) captures only its output), run it.
show() { { printf '+'; printf ' %q' "$@"; printf '\n'; } >&2; "$@"; }
# timed STAGE FUNCTION: run a function and record its wall time.
timed() {
  local start=$SECONDS
  say "$1"
  "$2"
  stage_names+=("$1")
  stage_seconds+=($((SECONDS - start)))
  echo "-- $1: $((SECONDS - start)) s"
}

# job_field ID FIELD: FIELD of every job (array task) of ID, one per line (scontrol keeps finished
# jobs for MinJobAge, an hour on the test cluster).
job_field() { { scontrol -o show job "$1" || true; } | { grep -o "$2=[^ ]*" || true; } | cut -d= -f2; }

# wait_jobs ID…: until no job of these ids is pending or running; fails at once on a dependency
# that can never be met (an array task failed) and after timeout_s seconds.
wait_jobs() {
  local deadline=$((SECONDS + timeout_s)) id states
  while :; do
    states=""
    for id in "$@"; do
      states+=" $(job_field "$id" JobState | tr '\n' ' ')"
      if job_field "$id" Reason | grep -q DependencyNeverSatisfied; then
        scontrol -o show job "$id" >&2
        die "job $id waits for a dependency that failed"
      fi
    done
    case "$states" in
      *PENDING*|*RUNNING*|*CONFIGURING*|*COMPLETING*|*SUSPENDED*) ;;
      *) return 0 ;;
    esac
    [ $SECONDS -lt $deadline ] || die "jobs $* still not finished after $timeout_s s:$states"
    sleep 3
  done
}

# expect_completed ID…: every job (and array task) of these ids ended COMPLETED.
expect_completed() {
  local id state
  for id in "$@"; do
    for state in $(job_field "$id" JobState); do
      [ "$state" = COMPLETED ] || { show_logs; die "job $id ended $state"; }
    done
    echo "job $id: $(job_field "$id" JobState | tr '\n' ' ')"
  done
}

show_logs() { tail -n 30 "$check"/jobs/*.log >&2 2>/dev/null || true; }

cleanup() {
  local status=$?
  say "cluster down"
  cd "$repo"
  bash tools/slurm_cluster.sh down || status=1
  if [ "$status" = 0 ]; then
    rm -rf "$check"
  fi
  exit "$status"
}

cluster_up() {
  show bash "$repo/tools/slurm_cluster.sh" up
}

make_dataset() {
  # Two participants: the sample's sub-26 (T1w, ce-T1w, T2w, FLAIR) and a copy of its T1w and
  # FLAIR as sub-27; the reference masks likewise, for the group level's scores.
  local bids=$check/bids file
  cp -r "$repo/bids_mdpp/data/sample" "$bids"
  mkdir -p "$bids/sub-27/anat" "$bids/derivatives/manual/sub-27/anat"
  for file in T1w FLAIR; do
    cp "$bids/sub-26/anat/sub-26_$file.nii.gz" "$bids/sub-27/anat/sub-27_$file.nii.gz"
  done
  cp "$bids/derivatives/manual/sub-26/anat/sub-26_label-lesion_mask.nii.gz" \
     "$bids/derivatives/manual/sub-27/anat/sub-27_label-lesion_mask.nii.gz"
  sed -n 's/^sub-26\t/sub-27\t/p' "$bids/participants.tsv" >> "$bids/participants.tsv"
  find "$bids" -name '*.nii.gz' | sort
}

submit_study() {
  show source "$venv/bin/activate"
  export BIDS_DIR=$check/bids OUTPUT_DIR=$check/out WORK_ROOT=$check/work
  export LABELS_DIR=$BIDS_DIR/derivatives/manual
  echo "+ export BIDS_DIR=$BIDS_DIR OUTPUT_DIR=$OUTPUT_DIR WORK_ROOT=$WORK_ROOT LABELS_DIR=$LABELS_DIR"
  echo "+ export SBATCH_OPTIONS=\"$SBATCH_OPTIONS\""
  local printed
  printed=$(show bash "$repo/docs/slurm/submit.sh")
  echo "$printed"
  array=$(sed -n 's/.*job array \([0-9]*\) .*/\1/p' <<< "$printed")
  group=$(sed -n 's/.*group level: job \([0-9]*\) .*/\1/p' <<< "$printed")
  [ -n "$array" ] && [ -n "$group" ] || die "submit.sh did not print the two job ids"
  show squeue
  wait_jobs "$array" "$group"
  expect_completed "$array" "$group"
  grep -h -E "preprocessing in|segmented in|Finished:" bids_mdpp_"${array}"_*.log
  local label kind
  for label in 26 27; do
    for kind in mask probseg; do
      ls "$OUTPUT_DIR/sub-$label/anat/"*"_label-lesion_$kind.nii.gz" \
        || die "sub-$label: no lesion $kind in $OUTPUT_DIR"
    done
    [ ! -e "$WORK_ROOT/sub-$label" ] || die "the finished task left its work directory $WORK_ROOT/sub-$label"
  done
  for table in group_lesions.tsv group_scores.tsv; do
    for label in 26 27; do
      grep -q "^sub-$label	" "$OUTPUT_DIR/$table" || die "$table has no row for sub-$label"
    done
  done
  cut -f 1-4 "$OUTPUT_DIR/group_lesions.tsv"
}

resubmit_finished() {
  local job
  # shellcheck disable=SC2086  # SBATCH_OPTIONS is a list of options
  job=$(show sbatch --parsable $SBATCH_OPTIONS --array=1 "$repo/docs/slurm/participant.sbatch" | tail -n 1)
  job=${job%%;*}
  wait_jobs "$job"
  expect_completed "$job"
  grep -h "outputs exist; skipping" "bids_mdpp_${job}_1.log" || die "task 1 resubmitted did not skip sub-26"
}

resume_cancelled() {
  local job done_nodes deadline=$((SECONDS + timeout_s)) cached
  # shellcheck disable=SC2086
  job=$(show sbatch --parsable $SBATCH_OPTIONS --array=2 "$repo/docs/slurm/participant.sbatch" \
        --overwrite -vv | tail -n 1)
  job=${job%%;*}
  # Cancel once a few preprocessing steps have finished in WORK_ROOT/sub-27 (a time limit or a
  # pre-emption does the same).
  while :; do
    done_nodes=$({ find "$WORK_ROOT/sub-27" -name 'result_*.pklz' 2>/dev/null || true; } | wc -l)
    [ "$done_nodes" -ge 4 ] && break
    [ "$(job_field "$job" JobState)" = RUNNING ] || [ "$(job_field "$job" JobState)" = PENDING ] \
      || die "job $job ended before it could be cancelled"
    [ $SECONDS -lt $deadline ] || die "job $job finished no preprocessing step in $timeout_s s"
    sleep 1
  done
  show scancel "$job"
  wait_jobs "$job"
  [ "$(job_field "$job" JobState)" = CANCELLED ] || die "job $job ended $(job_field "$job" JobState), not CANCELLED"
  [ -d "$WORK_ROOT/sub-27" ] || die "the cancelled task removed its work directory"
  echo "cancelled after $done_nodes finished steps; $WORK_ROOT/sub-27 kept"
  # shellcheck disable=SC2086
  job=$(show sbatch --parsable $SBATCH_OPTIONS --array=2 "$repo/docs/slurm/participant.sbatch" \
        --overwrite -vv | tail -n 1)
  job=${job%%;*}
  wait_jobs "$job"
  expect_completed "$job"
  cached=$(grep -c '\[Node\] Cached' "bids_mdpp_${job}_2.log" || true)
  [ "$cached" -ge "$done_nodes" ] \
    || die "the resubmitted task reused $cached steps, fewer than the $done_nodes finished before"
  echo "the resubmitted task reused $cached finished steps from $WORK_ROOT/sub-27"
  [ ! -e "$WORK_ROOT/sub-27" ] || die "the finished task left its work directory"
}

train_torchrun() {
  local job
  export MODEL_DIR=$check/model WORK_DIR=$check/work-train
  echo "+ export MODEL_DIR=$MODEL_DIR WORK_DIR=$WORK_DIR"
  job=$(show sbatch --parsable "${train_options[@]}" "$repo/docs/slurm/train.sbatch" --epochs 1 \
        --steps-per-epoch 2 --batch-size 2 --network-size tiny --val-fraction 0.5 --val-subsets full)
  job=${job%%;*}
  wait_jobs "$job"
  expect_completed "$job"
  ls "$MODEL_DIR/model_card.json" "$MODEL_DIR/model.pt" || die "train.sbatch wrote no model in $MODEL_DIR"
  grep -h "Model written" "bids_mdpp_train_$job.log" || die "the training log does not say the model was written"
}

nipype_slurm_plugin() {
  # Run on this node (the "login node") as docs/hpc.md shows; each Nipype step becomes a job.
  local out=$check/out-plugin work=$check/work-plugin first last outs id
  export LOGNAME=${LOGNAME:-$(id -un)}   # Nipype's SLURM plugin names the jobs after it
  first=$(scontrol show config | sed -n 's/^NEXT_JOB_ID *= *//p')
  show bids_mdpp "$BIDS_DIR" "$out" participant --participant-label 27 -w "$work" \
    --use-plugin "$repo/docs/plugins/slurm.yml" --nprocs 1 \
    || die "the participant with docs/plugins/slurm.yml failed"
  ls "$out/sub-27/anat/"*_label-lesion_mask.nii.gz || die "no lesion mask with the SLURM plugin"
  mapfile -t outs < <(find "$work" -path '*/batch/slurm-*.out' | sort)
  [ "${#outs[@]}" -ge 5 ] || die "only ${#outs[@]} Nipype steps ran as SLURM jobs (batch dir of $work)"
  last=0
  for id in "${outs[@]}"; do
    id=${id##*/slurm-}
    id=${id%.out}
    [ "$id" -ge "$first" ] || die "job $id is older than this run"
    grep -q "_job_complete: JobId=$id WEXITSTATUS 0" "${SLURM_TEST_DIR:-/var/tmp/bids_mdpp-slurm}/slurmctld.log" \
      || die "slurmctld did not log job $id ending with status 0"
    [ "$id" -gt "$last" ] && last=$id
  done
  echo "${#outs[@]} preprocessing steps ran as SLURM jobs $first-$last, each with exit status 0:"
  job_field "$last" JobName
}

[ "$(id -u)" = 0 ] || { echo "tools/check_slurm.sh: run as root (it starts a SLURM cluster)" >&2; exit 77; }
[ -x "$venv/bin/bids_mdpp" ] || { echo "no $venv/bin/bids_mdpp: bash tools/install.sh first" >&2; exit 69; }
# The daemons and the jobs inherit this niceness: the check shares the machine.
renice -n 10 -p $$ >/dev/null || true
rm -rf "$check"
mkdir -p "$check/jobs"
cd "$check/jobs"   # the jobs' logs (bids_mdpp_*.log) are written where they were submitted
trap cleanup EXIT
timed "cluster up" cluster_up
timed "dataset with two participants" make_dataset
timed "submit.sh: participant array and group job" submit_study
timed "finished task resubmitted" resubmit_finished
timed "cancelled task resubmitted" resume_cancelled
timed "train.sbatch: srun + torchrun" train_torchrun
timed "Nipype SLURM plugin" nipype_slurm_plugin
say "stage times"
for i in "${!stage_names[@]}"; do
  printf '%5d s  %s\n' "${stage_seconds[$i]}" "${stage_names[$i]}"
done
say "slurm check passed"
