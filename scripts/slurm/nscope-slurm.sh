#!/bin/bash
# Write and submit a sharded NeuronScope study as Slurm jobs: an array job of N shards
# (`nscope run --shard i/N --checkpoint-every K`, resuming a requeued shard) and a merge job that depends
# on it (`nscope merge ... --out OUT/merged`). docs/scale.md describes the layout and the options.
#
#   scripts/slurm/nscope-slurm.sh RECIPE.yaml --shards N --out DIR [--nscope PATH] [--cpus C]
#       [--checkpoint-every K] [--set KEY=VALUE]... [--sbatch-option "--partition=gpu"]... [--no-submit]
#
# Prints the two job ids (shards, merge); with --no-submit only writes DIR/slurm/{shards,merge}.sbatch.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

recipe="" shards="" out="" nscope="$(command -v nscope || true)" cpus=1 checkpoint=50 submit=1
sets=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --nscope) nscope="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --checkpoint-every) checkpoint="$2"; shift 2 ;;
    --set) sets+=("--set" "$2"); shift 2 ;;
    --sbatch-option) extra+=("#SBATCH $2"); shift 2 ;;
    --no-submit) submit=0; shift ;;
    -h|--help) usage ;;
    -*) echo "nscope-slurm: unknown option $1" >&2; usage ;;
    *) [ -z "$recipe" ] || { echo "nscope-slurm: one recipe only" >&2; exit 2; }; recipe="$1"; shift ;;
  esac
done
[ -n "$recipe" ] && [ -n "$shards" ] && [ -n "$out" ] || usage
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "nscope-slurm: --shards must be a positive integer, got '$shards'" >&2; exit 2; }
[ -f "$recipe" ] || { echo "nscope-slurm: no recipe file $recipe" >&2; exit 2; }
[ -n "$nscope" ] && [ -x "$nscope" ] || { echo "nscope-slurm: nscope not found; give --nscope PATH" >&2; exit 2; }
recipe="$(realpath "$recipe")" nscope="$(realpath "$nscope")"
mkdir -p "$out/slurm" "$out/shards"
out="$(realpath "$out")"
# The recipe is refused here, before any job is queued, if it cannot be sharded (exit 2 with the reason).
"$nscope" run "$recipe" "${sets[@]}" --shard "0/$shards" --dry-run > "$out/slurm/plan.txt"
name="$(basename "$recipe" .yaml)"

quote() { printf '%q ' "$@"; }
render() {  # template -> script, with every @KEY@ replaced
  local text
  text="$(cat "$1")"
  text="${text//@NAME@/$name}"
  text="${text//@LAST@/$((shards - 1))}"
  text="${text//@SHARDS@/$shards}"
  text="${text//@CPUS@/$cpus}"
  text="${text//@OUT@/$out}"
  text="${text//@NSCOPE@/$(quote "$nscope")}"
  text="${text//@RECIPE@/$(quote "$recipe")}"
  text="${text//@SETS@/$( [ ${#sets[@]} -eq 0 ] || quote "${sets[@]}")}"
  text="${text//@CHECKPOINT@/$checkpoint}"
  text="${text//@EXTRA@/$(printf '%s\n' "${extra[@]}")}"
  printf '%s\n' "$text" > "$2"
  chmod +x "$2"
}
render "$here/shards.sbatch.in" "$out/slurm/shards.sbatch"
render "$here/merge.sbatch.in" "$out/slurm/merge.sbatch"
if [ "$submit" = 0 ]; then
  echo "$out/slurm/shards.sbatch"
  echo "$out/slurm/merge.sbatch"
  exit 0
fi
shards_job="$(sbatch --parsable "$out/slurm/shards.sbatch")"
shards_job="${shards_job%%;*}"
merge_job="$(sbatch --parsable --dependency="afterok:$shards_job" --kill-on-invalid-dep=yes "$out/slurm/merge.sbatch")"
echo "shards job $shards_job, merge job ${merge_job%%;*}; merged run: $out/merged"
