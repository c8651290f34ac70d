#!/usr/bin/env bash
# The paper's table on a Slurm cluster: `clipshape eval` as a job array of N shards, each task
# `clipshape eval … --shard $SLURM_ARRAY_TASK_ID/N --stats-out OUT/shard-I-of-N.st`, and a merge
# job that runs once every shard has succeeded (afterok) and writes OUT/table.md.
#
#   tools/eval_slurm.sh N OUT [--gpu] [--reference DIR] [--json] -- SHIFT… --model MODEL --seeds 0-2999 --inception FILE
#
# OUT must be a folder every node sees (a shared file system). Everything after `--` is what
# `clipshape eval` takes. Environment: CLIPSHAPE (the program, default `clipshape` on PATH),
# SBATCH_ARGS (more sbatch options for the shards: partition, time, account …). Prints the two
# job ids; `cat OUT/table.md` once the merge job has ended.
set -euo pipefail
usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[ $# -ge 3 ] || usage
n=$1 out=$2
shift 2
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "eval_slurm.sh: N must be a positive number, got $n" >&2; exit 2; }
device=cpu merge_extra=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case "$1" in
        --gpu) device=cuda ;;
        --reference) merge_extra+=(--reference "${2:?--reference needs a folder}"); shift ;;
        --json) merge_extra+=(--json) ;;
        *) usage ;;
    esac
    shift
done
[ "${1:-}" = -- ] || usage
shift
eval_args=("$@")
clipshape=${CLIPSHAPE:-clipshape}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Never written over: the folder is the person's (a finished or failed earlier run stays).
for f in "$out/table.md" "$out"/shard-*-of-"$n".st; do
    if [ -e "$f" ] || [ -L "$f" ]; then
        echo "eval_slurm.sh: $f exists (an earlier run's?): give another folder, or remove it" >&2
        exit 2
    fi
done

# The Inception network the shards use, for the merge (it checks it is the same file).
for ((i = 0; i < ${#eval_args[@]}; i++)); do
    if [ "${eval_args[$i]}" = --inception ] && [ $((i + 1)) -lt ${#eval_args[@]} ]; then
        merge_extra+=(--inception "${eval_args[$((i + 1))]}")
    fi
done

gres=()
[ "$device" = cuda ] && gres=(--gres=gpu:1)
# shellcheck disable=SC2086
shards=$(sbatch --parsable --job-name=clipshape-eval --array="0-$((n - 1))" "${gres[@]}" ${SBATCH_ARGS:-} \
    --output="$out/shard-%a-of-$n.log" \
    --wrap="$(printf '%q ' "$clipshape" --device "$device" eval "${eval_args[@]}")--shard \"\$SLURM_ARRAY_TASK_ID/$n\" --stats-out $(printf '%q' "$out")/shard-\$SLURM_ARRAY_TASK_ID-of-$n.st")
shards=${shards%%;*}
q_out=$(printf '%q' "$out")
merge_cmd="$(printf '%q ' "$clipshape" --device cpu eval --merge)$q_out/shard-*-of-$n.st"
[ ${#merge_extra[@]} -eq 0 ] || merge_cmd+=" $(printf '%q ' "${merge_extra[@]}")"
merge=$(sbatch --parsable --job-name=clipshape-eval-merge --dependency="afterok:$shards" \
    --output="$out/merge.log" --wrap="$merge_cmd > $q_out/table.md.part && mv -f $q_out/table.md.part $q_out/table.md")
merge=${merge%%;*}
echo "shards: job $shards (array 0-$((n - 1))), merge: job $merge; the table goes to $out/table.md"
