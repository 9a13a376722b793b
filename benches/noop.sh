#!/usr/bin/env bash
# A no-op `pipeline run` and `pipeline plan` against GNU make deciding the same DAG is
# up to date, timed alternately on a release build. Prints one line per command with
# the median and range of wall time, peak RSS, and the ratio of medians to make.
#
# The experiment (benches/gen_matrix.sh): 10 simulated models × S seeds, one datagen
# step per seed, one measure per (model, seed), one aggregate, one report. The
# Makefile has one target file per step with the same edges (measure ← its seed's
# datagen, aggregate ← every measure, report ← aggregate), each recipe `touch $@`.
# A second Makefile has the same DAG over the files a no-op run stats: each step's
# target is its cache entry (manifest and outputs, a grouped target), so make stats
# exactly the files pipeline checks for tampering. Last, the floor: the same files
# stat'ed by a C loop and nothing else (needs `cc`).
#
# Usage: benches/noop.sh [STEPS] [ROUNDS]   (defaults 10000 and 11)
# STEPS is rounded to whole seeds: 11 steps per seed, plus 2.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc > /dev/null || { echo "benches/noop.sh needs a C compiler (cc) for its floor" >&2; exit 1; }
steps=${1:-10000}
rounds=${2:-11}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pipeline/target}"
if [[ -n "${PIPELINE_BIN:-}" ]]; then
  bin=$(realpath "$PIPELINE_BIN")
else
  cargo build --release --locked --quiet
  bin="$CARGO_TARGET_DIR/release/pipeline"
fi
seeds=$(( (steps - 2 + 10) / 11 ))
cells=$(( seeds * 10 ))
work=${NOOP_WORK:-$(mktemp -d)}
[[ -n "${NOOP_WORK:-}" ]] || trap 'rm -rf "$work"' EXIT
cp -r benches "$work/"
cd "$work"
mkdir -p experiments mk

benches/gen_matrix.sh "$cells" noop > experiments/noop.toml
if ! "$bin" plan experiments/noop.toml 2>/dev/null | tail -1 | grep -q ' 0 to run'; then
  start=$EPOCHREALTIME
  "$bin" run experiments/noop.toml -j 2 > /dev/null 2> populate.log || { tail populate.log; exit 1; }
  echo "populate: $cells cells in $(awk "BEGIN{printf \"%.0f\", $EPOCHREALTIME - $start}") s"
fi
total=$("$bin" run experiments/noop.toml 2>&1 | grep -o '[0-9]* steps' | head -1)

{
  measures=()
  for s in $(seq 1 "$seeds"); do
    echo "mk/datagen-$s:"
    printf '\ttouch $@\n'
    for m in $(seq 0 9); do
      echo "mk/measure-m$m-$s: mk/datagen-$s"
      printf '\ttouch $@\n'
      measures+=("mk/measure-m$m-$s")
    done
  done
  echo "mk/aggregate: ${measures[*]}"
  printf '\ttouch $@\n'
  echo "mk/report: mk/aggregate"
  printf '\ttouch $@\n'
  echo ".DEFAULT_GOAL := mk/report"
} > Makefile
make -s -j 2 > /dev/null
make -q || { echo "make does not consider its targets up to date" >&2; exit 1; }
targets=$(( seeds * 11 + 2 ))

# The same DAG over the files pipeline checks: each step's target is its cache entry's
# manifest and outputs (a grouped target), its prerequisites its inputs' files. make
# then stats every file a no-op `pipeline run` stats, once each.
python3 - <<'PY' > Makefile.files
import glob, json, os
record = json.load(open(glob.glob("cache/runs/noop.*.json")[0]))
def files(step):
    d = f"cache/{step['kind']}/{step['key'][:2]}/{step['key']}"
    manifest = json.load(open(f"{d}/manifest.json"))
    return [f"{d}/manifest.json"] + [f"{d}/{f['path']}" for f in manifest["files"]]
steps = {s["id"]: s for s in record.values()}
own = {i: files(s) for i, s in steps.items()}
datagen = {dict(s["coords"])["seed"]: i for i, s in steps.items() if s["kind"] == "datagen"}
measures = [i for i, s in steps.items() if s["kind"] == "measure"]
print(".DEFAULT_GOAL := all")
for i, s in steps.items():
    deps = {"datagen": [], "aggregate": measures, "report": ["aggregate"]}.get(s["kind"])
    if deps is None:
        deps = [datagen[dict(s["coords"])["seed"]]]
    prereqs = " ".join(f for d in deps for f in own[d])
    print(f"{' '.join(own[i])} &: {prereqs}\n\ttouch $@")
report = next(i for i, s in steps.items() if s["kind"] == "report")
print(f"all: {' '.join(own[report])}")
# The same files for the stat floor below, each entry's files together.
with open("stat.list", "w") as out:
    out.writelines(f + "\n" for fs in own.values() for f in fs)
PY
make -f Makefile.files -q all || { echo "make does not consider the cache's files up to date" >&2; exit 1; }
files=$(grep -c '&:' Makefile.files)
stats=$(python3 -c "import sys; print(sum(len(l.split(' &:')[0].split()) for l in open('Makefile.files') if ' &:' in l))")

# The floor: the same stats and nothing else (a C loop, one `fstatat` per file, the
# files split between as many threads as there are cores, as a no-op run does), both
# relative to the cache folder, as pipeline stats, and relative to each entry's
# folder, opened once. No no-op can beat it while it checks every file
# (docs/cache.md).
threads=$(( $(nproc) < 64 ? $(nproc) : 64 ))
cat > statfloor.c <<'C'
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static char **paths; static size_t count; static int root, per_entry, threads;
static void *part(void *arg) {
  size_t t = (size_t)arg, from = count * t / threads, to = count * (t + 1) / threads;
  char dir[512] = ""; int fd = -1; struct stat st; long seen = 0;
  for (size_t i = from; i < to; i++) {
    if (!per_entry) { seen += fstatat(root, paths[i], &st, 0) == 0; continue; }
    char *slash = strrchr(paths[i], '/'); size_t n = slash - paths[i];
    if (n >= sizeof dir) exit(2);
    if (strncmp(dir, paths[i], n) || dir[n]) {
      if (fd >= 0) close(fd);
      memcpy(dir, paths[i], n); dir[n] = 0;
      fd = openat(root, dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    seen += fstatat(fd, slash + 1, &st, 0) == 0;
  }
  if (fd >= 0) close(fd);
  return (void *)seen;
}
int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: statfloor root|entry THREADS\n"); return 2; }
  per_entry = !strcmp(argv[1], "entry"); threads = atoi(argv[2]);
  if (threads < 1 || threads > 64) { fprintf(stderr, "statfloor: 1 to 64 threads\n"); return 2; }
  FILE *f = fopen("stat.list", "r"); static char buf[1 << 28];
  if (!f) { perror("statfloor: stat.list"); return 2; }
  size_t n = fread(buf, 1, sizeof buf - 1, f); buf[n] = 0;
  if (n == sizeof buf - 1) { fprintf(stderr, "statfloor: stat.list is over 256 MB\n"); return 2; }
  paths = malloc(sizeof(char *) * (n / 8 + 1));
  for (char *p = strtok(buf, "\n"); p; p = strtok(NULL, "\n")) paths[count++] = p + strlen("cache/");
  root = open("cache", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) { perror("statfloor: cache"); return 2; }
  pthread_t th[64]; long seen = 0; void *r;
  for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, part, (void *)t);
  for (long t = 0; t < threads; t++) { pthread_join(th[t], &r); seen += (long)r; }
  if (seen != (long)count) { fprintf(stderr, "statfloor: %ld of %zu files are missing\n", (long)count - seen, count); return 1; }
  return 0;
}
C
cc -O2 -pthread -o statfloor statfloor.c

# One timed call: wall seconds (from the shell's microsecond clock) and peak RSS (KB).
timed() {
  local start=$EPOCHREALTIME
  /usr/bin/time -f "%M" -o rss.txt "$@" > out.txt 2> err.txt || { cat err.txt out.txt >&2; exit 1; }
  local end=$EPOCHREALTIME
  echo "$(awk "BEGIN{printf \"%.4f\", $end - $start}") $(cat rss.txt)"
}
: > make.t; : > make_files.t; : > run.t; : > plan.t; : > floor.t; : > floor_entry.t
for _ in $(seq 1 "$rounds"); do
  timed make > /dev/null   # the page cache is warm for both alike
  timed make >> make.t
  timed make -f Makefile.files all >> make_files.t
  timed "$bin" run experiments/noop.toml >> run.t
  grep -q '^0 ran' err.txt || { echo "the no-op run ran something:" >&2; cat err.txt >&2; exit 1; }
  timed "$bin" plan experiments/noop.toml >> plan.t
  timed ./statfloor root "$threads" >> floor.t
  timed ./statfloor entry "$threads" >> floor_entry.t
done
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
make_med=$(cut -d' ' -f1 make.t | median)
line() { # name file
  local med lo hi rss
  med=$(cut -d' ' -f1 "$2" | median)
  lo=$(cut -d' ' -f1 "$2" | sort -n | head -1)
  hi=$(cut -d' ' -f1 "$2" | sort -n | tail -1)
  rss=$(cut -d' ' -f2 "$2" | sort -n | tail -1)
  printf '%-22s median %.3f s (%.3f–%.3f), peak %d MB, %.2f× make\n' "$1" "$med" "$lo" "$hi" $((rss / 1024)) "$(awk "BEGIN{print $med / $make_med}")"
}
echo "$targets make targets (one file per step); $stats files in $files grouped targets (the cache's files); $total of pipeline; $rounds rounds alternating"
line "make (no-op)" make.t
line "make, the cache's files" make_files.t
line "pipeline run (no-op)" run.t
line "pipeline plan" plan.t
line "stats alone, $threads thr." floor.t
line "  by entry folder" floor_entry.t
