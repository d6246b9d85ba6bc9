#!/usr/bin/env bash
# The whole GPU check in one call of the device tool: every CUDA code path once, and the figures
# docs/performance.md is missing. Each stage writes into $OUT as it goes (a progress log,
# its own log, a line of stages.tsv), so a run cut short still returns what it finished.
#
#   bash tests/gpu_check.sh              # on the GPU machine: about 7 minutes on one H100
#   bash tests/gpu_check.sh --dry-run    # on the CPU: tiny sizes, everything but CUDA (2 minutes on 2 cores)
#
# Stages, in order (a failed stage does not stop the next; a stage that would not fit in what is
# left of the time budget is skipped):
#   env        nvidia-smi, versions, which imports the image lacks
#   install    perforatedai and what the image lacks, from the wheels in .whl/ (no network there)
#   data       generated CIFAR-100 folders: a small one, and one of CIFAR-100's size
#   smoke      main.py --smoke on CUDA: every stage, a dendrite, every output checked   } at once: they
#   resume     a small dendritic run killed with SIGKILL mid-run, run again: it resumes } check, not time
#   benchmark  benchmark.py: ours against the reference, share of peak, dendrite cost, peak memory
#   timed      the short run at full size, then benchmark.py --project: the default experiment's wall time
#   share      one short resnet18 run alone, then two at once on the one GPU: does sharing pay?
#   compile    the short run again with --compile (fewer epochs: compiling is slow), and its projection
#   (last)     summary.txt: every stage's status and the figures, from the files above
#
# The image has Python 3.12 and its own torch (and torchvision), not perforatedai; the machine has
# no network. So the wheels are fetched here, beforehand, into .whl/ (git-ignored: the device tool
# must carry it; about 56 MB; pandas, matplotlib and contourpy capped to work with a numpy 1.26 image;
# cryptography, cffi and pycparser: perforatedai's import needed them on that image, shared/PAI_NOTES.md):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl perforatedai==3.2.9 safetensors "pandas>=2.2,<3" pytz tzdata "python-dateutil<3" six \
#       "matplotlib<3.11" "contourpy<1.4" cycler kiwisolver pyparsing packaging tqdm cryptography cffi
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3 --implementation py \
#       --platform any -d .whl fonttools pycparser     # fonttools' pure-Python wheel: 1.2 MB instead of 5.4
# Environment: OUT (default: a new temporary folder), PYTHON (default python3), BUDGET_SECONDS
# (default 450 on the GPU: every stage must have ended by then; the summary follows).
# Nothing is written into the repository: data and results go to a temporary folder, removed at
# the end (KEEP_WORK=1 keeps it), and Python writes no bytecode.
set -u

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SELF")")
PY=${PYTHON:-python3}
DRY_RUN=0
STAGE=""  # set when this script runs itself for one stage (see run_stage)
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --stage) STAGE=$2; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (use --dry-run, or nothing)" >&2; exit 2 ;;
    esac
    shift
done

# --- Sizes: the real run, and the dry run that checks everything but CUDA in a few minutes ----------
if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu
    WIDTH_FLAGS="--width 0.125"            # ResNets of 8-64 channels (ResNet-18: 182,252 parameters)
    SMALL_TRAIN=1200; SMALL_TEST=200       # as the test suite's: 1,000 training images after a split of 200
    FULL_TRAIN=6000; FULL_TEST=1000        # no time for CIFAR-100's size on a CPU; > the 5,000 held out
    SMOKE_FLAGS="--val-split 200"
    BENCHMARK_FLAGS="--quick --batch-size 4 --steps 1 --warmup-steps 1 $WIDTH_FLAGS"
    # --project needs config.py's batch size and validation split: only epoch counts are cut.
    TIMED_FLAGS="--epochs 1 --warmup-epochs 0 --dendrite-epochs 1 --max-dendrites 1"
    COMPILE_FLAGS="--experiments resnet18,resnet18_dendritic,resnet34 $TIMED_FLAGS"   # as the GPU's order
    RESUME_FLAGS="--val-split 200 --batch-size 100 --epochs 2 --warmup-epochs 1 --dendrite-epochs 3 --max-dendrites 1"
    SHARE_FLAGS="--experiments resnet18 --val-split 200 --batch-size 100 --epochs 1 --warmup-epochs 0"
    SHARE_ON=small
    BUDGET_SECONDS=${BUDGET_SECONDS:-900}
    # Generating kernels takes minutes on one core: capture the graphs (dynamo, AOT autograd), run
    # them eagerly. The flag, the graph breaks at the dendrite modules and the results are checked.
    export TORCH_COMPILE_OVERRIDE_BACKENDS=">=0:aot_eager"
else
    DEVICE=cuda
    WIDTH_FLAGS=""                         # the standard networks
    SMALL_TRAIN=6000; SMALL_TEST=1000      # smoke (a 256-image slice of each split) and resume
    FULL_TRAIN=50000; FULL_TEST=10000
    SMOKE_FLAGS=""                         # exactly README's command
    BENCHMARK_FLAGS=""                     # batch 512, 10 warm-up and 50 timed steps per measurement
    TIMED_FLAGS="--epochs 3 --warmup-epochs 1 --dendrite-epochs 4"   # docs/performance.md
    # Compiling costs a first epoch per architecture and per dendrite restructure: fewer of each.
    # The dendritic run (graph breaks, a recompile per restructure) goes before resnet34, so that
    # a stage cut short by the time budget has timed it.
    COMPILE_FLAGS="--experiments resnet18,resnet18_dendritic,resnet34 --epochs 2 --warmup-epochs 1 --dendrite-epochs 3 --max-dendrites 2"
    # 5,000 training images, 10 steps an epoch: slow enough to be killed between two epochs.
    RESUME_FLAGS="--val-split 1000 --epochs 4 --warmup-epochs 1 --dendrite-epochs 4"
    SHARE_FLAGS="--experiments resnet18 --epochs 3 --warmup-epochs 1"
    SHARE_ON=full
    BUDGET_SECONDS=${BUDGET_SECONDS:-450}
fi
MAIN=$REPO/dendritic_experiment/main.py
# One seed everywhere but --smoke (which takes one by itself): the default of three would triple each run.
RESUME_FLAGS="--seeds 0 --experiments resnet18,resnet18_dendritic --no-control --max-dendrites 2 --checkpoint-seconds 0 $RESUME_FLAGS"
SHARE_FLAGS="--seeds 0 $SHARE_FLAGS"
KILL_AFTER_EPOCHS=2   # of the dendritic run: mid-way through its first dendrite cycle
export PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg   # no __pycache__ in the repository; pictures as files

now_ms() { echo $(($(date +%s%N) / 1000000)); }  # wall-clock helpers in plain bash (the image may have no bc)
seconds_since() { local ms=$(($(now_ms) - $1)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# --- One stage (this script run again with --stage NAME, under `timeout`) --------------------------

stage_env() {
    date -u
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    echo; uname -a; nproc; free -g; df -h /tmp
    if command -v gcc >/dev/null; then gcc --version | head -1; else echo "gcc: not found (inductor needs a C compiler)"; fi
    "$PY" -m pip --version || echo "pip: not found"
    echo "PYTHONPATH=${PYTHONPATH:-}"
    "$PY" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
# What the project and perforatedai import; before the install stage, perforatedai (and maybe more) is missing.
for name in ("torch", "torchvision", "numpy", "PIL", "tqdm", "matplotlib", "pandas", "safetensors", "dateutil",
             "perforatedai", "triton", "requests", "yaml", "cryptography"):
    try:
        module = importlib.import_module(name)
        print(f"import {name:13s} ok       {getattr(module, '__version__', '?'):14s} {module.__file__}")
    except Exception as error:
        print(f"import {name:13s} MISSING  {type(error).__name__}: {error}")
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print("device", properties.name, "capability", f"{properties.major}.{properties.minor}",
          f"memory {properties.total_memory / 2**30:.1f} GiB", "bf16", torch.cuda.is_bf16_supported())
EOF
}

stage_install() {
    # Only what the image lacks is installed, so the image's own numpy, pillow and the like are
    # never shadowed: a missing package, and those of its requirements that are missing too.
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.util
def missing(name):
    return importlib.util.find_spec(name) is None
# package (its import name is its wheel's name) -> {import name: wheel} of what it needs besides numpy, pillow
NEEDS = {"perforatedai": {"cryptography": "cryptography", "cffi": "cffi", "pycparser": "pycparser"},
         "safetensors": {}, "tqdm": {},
         "pandas": {"pytz": "pytz", "tzdata": "tzdata", "dateutil": "python-dateutil", "six": "six"},
         "matplotlib": {"contourpy": "contourpy", "cycler": "cycler", "fontTools": "fonttools",
                        "kiwisolver": "kiwisolver", "pyparsing": "pyparsing", "packaging": "packaging",
                        "dateutil": "python-dateutil", "six": "six"}}
wheels = []
for package, needs in NEEDS.items():
    if missing(package):
        wheels += [package] + [wheel for name, wheel in needs.items() if missing(name)]
print(" ".join(dict.fromkeys(wheels)))
EOF
)
    echo "missing, to install from .whl/: ${missing:-nothing}"
    if [ -n "$missing" ]; then
        ls -l "$REPO/.whl" || { echo "no .whl/ folder: was it carried?"; return 1; }
        mkdir -p "$SITE"
        if "$PY" -m pip --version >/dev/null 2>&1; then
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --find-links "$REPO/.whl" \
                --target "$SITE" $missing || return 1
        else  # no pip in the image: a wheel is a zip archive of the installed files
            for wheel in $missing; do
                "$PY" -m zipfile -e "$(ls "$REPO"/.whl/"${wheel//-/_}"-*.whl | head -1)" "$SITE" || return 1
            done
        fi
    fi
    "$PY" -c "import numpy, PIL, torchvision, tqdm, matplotlib, pandas, safetensors, perforatedai, importlib.metadata as m
print('imports ok; perforatedai', m.version('perforatedai'), 'from', perforatedai.__file__)"
}

stage_data() {
    "$PY" "$REPO/tests/fake_cifar.py" "$SMALL_DATA" --train "$SMALL_TRAIN" --test "$SMALL_TEST" || return 1
    "$PY" "$REPO/tests/fake_cifar.py" "$FULL_DATA" --train "$FULL_TRAIN" --test "$FULL_TEST"
}

stage_smoke() {
    local rc
    "$PY" "$MAIN" $WIDTH_FLAGS --smoke $SMOKE_FLAGS --device "$DEVICE" --data-dir "$SMALL_DATA" --results-dir "$WORK/smoke"; rc=$?
    echo; echo "--- main.py --smoke: exit status $rc; its outputs:"
    "$PY" - "$WORK/smoke/smoke" "$DEVICE" <<'EOF'
import csv, json, os, sys
folder, device = sys.argv[1:]
problems = []
def check(ok, what):
    print(("ok       " if ok else "MISSING  ") + what)
    if not ok:
        problems.append(what)
for name in ("summary.json", "summary.md", "comparison.png"):
    check(os.path.isfile(os.path.join(folder, name)), name)
for run in ("resnet18", "resnet34", "resnet18_dendritic", "resnet18_continued"):
    files = ["result.json", "history.csv", "model.pt", "test_predictions.pt", "curves.png", "misclassified.png"]
    for name in files + ["PAI.png"] * (run == "resnet18_dendritic"):
        check(os.path.isfile(os.path.join(folder, run, name)), f"{run}/{name}")
    check(not os.path.exists(os.path.join(folder, run, "checkpoint.pt")), f"{run}: no checkpoint.pt left")
    try:
        result = json.load(open(os.path.join(folder, run, "result.json")))
        rows = list(csv.DictReader(open(os.path.join(folder, run, "history.csv"))))
    except OSError:
        continue
    check(result.get("device", "").startswith(device), f"{run}: trained on {result.get('device')}")
    print(f"         {run}: precision {result.get('precision')}, {len(rows)} epochs, "
          f"{result['params']:,} parameters, test accuracy {result['test_accuracy']:.2f}%")
    if run == "resnet18_dendritic":  # the tracker may remove the dendrite again; it must have been added
        check(any(int(row["dendrites"]) >= 1 for row in rows), f"{run}: a dendrite was added")
sys.exit(1 if problems else 0)
EOF
    [ $? = 0 ] && [ "$rc" = 0 ]
}

stage_resume() {
    local results=$WORK/resume history rc
    history=$results/resnet18_dendritic/history.csv
    echo "main.py $RESUME_FLAGS, killed once the dendritic run has $KILL_AFTER_EPOCHS epochs"
    "$PY" "$MAIN" $WIDTH_FLAGS $RESUME_FLAGS --device "$DEVICE" --data-dir "$SMALL_DATA" --results-dir "$results" \
        > "$OUT/resume.killed_run.log" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [ -f "$history" ] && [ $(($(wc -l < "$history") - 1)) -ge "$KILL_AFTER_EPOCHS" ]; then
            kill -9 "$pid"
            break
        fi
        sleep 0.05
    done
    wait "$pid" 2>/dev/null; rc=$?
    [ -f "$history" ] && echo "history.csv had $(($(wc -l < "$history") - 1)) epochs"
    echo "first run: exit status $rc (137: killed)"
    [ "$rc" = 137 ] || { echo "FAILED: the run was not killed mid-way (see resume.killed_run.log)"; return 1; }
    [ -f "$results/resnet18_dendritic/checkpoint.pt" ] || { echo "FAILED: no checkpoint.pt"; return 1; }
    "$PY" "$MAIN" $WIDTH_FLAGS $RESUME_FLAGS --device "$DEVICE" --data-dir "$SMALL_DATA" --results-dir "$results" \
        > "$OUT/resume.rerun.log" 2>&1; rc=$?
    echo "rerun: exit status $rc"; grep -E "reusing|resuming" "$OUT/resume.rerun.log"
    [ "$rc" = 0 ] || { echo "FAILED: the rerun failed (see resume.rerun.log)"; return 1; }
    grep -q "resnet18_dendritic: resuming after epoch" "$OUT/resume.rerun.log" || { echo "FAILED: did not resume"; return 1; }
    [ ! -f "$results/resnet18_dendritic/checkpoint.pt" ] || { echo "FAILED: checkpoint.pt left"; return 1; }
    # Each epoch once, in order: the epochs after the checkpoint were trained again, not appended twice.
    "$PY" - "$history" <<'EOF'
import csv, sys
epochs = [int(row["epoch"]) for row in csv.DictReader(open(sys.argv[1]))]
dendrites = [row["dendrites"] for row in csv.DictReader(open(sys.argv[1]))]
print("dendritic run's epochs after the rerun:", epochs, "dendrites:", dendrites)
sys.exit(0 if epochs == list(range(1, len(epochs) + 1)) else 1)
EOF
}

stage_benchmark() {  # its table (stdout) also to benchmark.txt; run in an empty folder, which it must leave empty
    set -o pipefail; mkdir "$WORK/benchmark" && cd "$WORK/benchmark" || return 1
    "$PY" "$REPO/tests/benchmark.py" --device "$DEVICE" $BENCHMARK_FLAGS --output "$OUT/benchmark.json" \
        | tee "$OUT/benchmark.txt" && [ -z "$(ls -A)" ] || { echo "FAILED (or left files here: $(ls -A))"; return 1; }
}

# A short run of the default experiment and its projection (timed: as docs/performance.md says; compile: with --compile).
short_run_and_projection() {
    local results=$1; shift
    "$PY" "$MAIN" $WIDTH_FLAGS --seeds 0 --device "$DEVICE" --data-dir "$FULL_DATA" --results-dir "$results" "$@" || return 1
    "$PY" "$REPO/tests/benchmark.py" --project "$results" $WIDTH_FLAGS
}
stage_timed() { short_run_and_projection "$WORK/timed" $TIMED_FLAGS; }
stage_compile() { short_run_and_projection "$WORK/compile" --compile $COMPILE_FLAGS; }

stage_share() {
    local start alone pair a b rc_a rc_b data=$FULL_DATA images=$FULL_TRAIN
    [ "$SHARE_ON" = small ] && data=$SMALL_DATA images=$SMALL_TRAIN
    start=$(now_ms)
    "$PY" "$MAIN" $WIDTH_FLAGS --device "$DEVICE" --data-dir "$data" --results-dir "$WORK/share/alone" $SHARE_FLAGS \
        > "$OUT/share.alone.log" 2>&1 || { echo "FAILED: the run alone (see share.alone.log)"; return 1; }
    alone=$(seconds_since "$start")
    start=$(now_ms)
    "$PY" "$MAIN" $WIDTH_FLAGS --device "$DEVICE" --data-dir "$data" --results-dir "$WORK/share/pair_a" $SHARE_FLAGS \
        > "$OUT/share.pair_a.log" 2>&1 &
    a=$!
    "$PY" "$MAIN" $WIDTH_FLAGS --device "$DEVICE" --data-dir "$data" --results-dir "$WORK/share/pair_b" $SHARE_FLAGS \
        > "$OUT/share.pair_b.log" 2>&1 &
    b=$!
    wait "$a"; rc_a=$?
    wait "$b"; rc_b=$?
    pair=$(seconds_since "$start")
    echo "one run alone: ${alone}s; two at once: ${pair}s for both (exit status $rc_a, $rc_b)"
    [ "$rc_a" = 0 ] && [ "$rc_b" = 0 ] || return 1
    "$PY" - "$WORK/share" "$alone" "$pair" "$OUT/share.json" "$images" <<'EOF'
import csv, json, statistics, sys
folder, alone_wall, pair_wall, output, images = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def run(name):
    settings = json.load(open(f"{folder}/{name}/resnet18/result.json"))["settings"]
    seconds = [float(row["seconds"]) for row in csv.DictReader(open(f"{folder}/{name}/resnet18/history.csv"))]
    steady = statistics.median(seconds[1:] or seconds)  # the first epoch pays for cuDNN's kernel search
    batch = settings["batch_size"]  # an epoch trains whole batches of what the validation split leaves
    trained = (images - settings["val_split"]) // batch * batch
    return {"epoch_seconds": seconds, "steady_epoch_seconds": steady, "images_per_epoch": trained,
            "images_per_s": trained / steady}  # an epoch's seconds include its validation pass
alone, a, b = run("alone"), run("pair_a"), run("pair_b")
share = {"alone": alone, "pair_a": a, "pair_b": b, "alone_wall_seconds": alone_wall, "pair_wall_seconds": pair_wall,
         # > 1: two runs at once finish sooner than the same two one after the other
         "wall_speedup_of_sharing": 2 * alone_wall / pair_wall,
         # > 1: the GPU trains more images per second with two runs on it (epochs only, no start-up)
         "epoch_throughput_ratio": (1 / a["steady_epoch_seconds"] + 1 / b["steady_epoch_seconds"])
                                   * alone["steady_epoch_seconds"]}
json.dump(share, open(output, "w"), indent=2)
print(f"steady epoch: alone {alone['steady_epoch_seconds']:.2f}s ({alone['images_per_s']:,.0f} images/s), "
      f"two at once {a['steady_epoch_seconds']:.2f}s and {b['steady_epoch_seconds']:.2f}s "
      f"({a['images_per_s'] + b['images_per_s']:,.0f} images/s together): "
      f"{share['epoch_throughput_ratio']:.2f}x the images/s of one run; "
      f"wall time of two runs: {share['wall_speedup_of_sharing']:.2f}x faster together than one after the other")
EOF
}

if [ -n "$STAGE" ]; then  # the child: run the one stage; its status is the stage's
    cd "$WORK" || exit 1  # anything a tool writes to its working folder lands in WORK, not the repository
    "stage_$STAGE"
    exit $?
fi

# --- The parent: stages in order, each under a time limit, then the summary ------------------------

OUT=${OUT:-$(mktemp -d /tmp/gpu_check_out.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_check_work.XXXXXX)
SITE=$WORK/site   # the installed wheels
SMALL_DATA=$WORK/small_data
FULL_DATA=$WORK/full_data
export OUT WORK SITE SMALL_DATA FULL_DATA
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
STARTED=$(date +%s)
DEADLINE=$((STARTED + BUDGET_SECONDS))
FAILED=0

cleanup() {
    [ -n "${MONITOR:-}" ] && kill "$MONITOR" 2>/dev/null
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

progress() { echo "[$(($(date +%s) - STARTED))s] $*" | tee -a "$OUT/progress.log"; }

# Copy a results folder's small files (no weights, no checkpoints, not the library's PAI/ folder of
# checkpoints) into OUT, also when its stage was cut short.
collect() {
    local from=$1 to=$2
    [ -d "$from" ] || return 0
    mkdir -p "$to"
    (cd "$from" && find . -type f \( -name '*.json' -o -name '*.csv' -o -name '*.md' -o -name '*.png' \) \
        -not -path '*/PAI/*' -exec cp --parents {} "$to" \;)
}

# run_stage NAME MAX_SECONDS MIN_SECONDS [RESULTS_FOLDER]: the stage in its own process group under
# `timeout` (so a hung stage is killed with everything it started), given at most MAX_SECONDS and
# never past the deadline; skipped when fewer than MIN_SECONDS are left.
run_stage() {
    local name=$1 max=$2 min=$3 results=${4:-} left limit start rc seconds status dry_flag=""
    left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt "$min" ]; then
        progress "skip $name: ${left}s left, it needs ${min}s"
        printf '%s\tskipped\t\t\t\n' "$name" >> "$OUT/stages.tsv"
        return 1
    fi
    limit=$((left < max ? left : max))
    progress "start $name (at most ${limit}s)"
    start=$(now_ms)
    [ "$DRY_RUN" = 1 ] && dry_flag=--dry-run
    timeout --kill-after=10 "$limit" bash "$SELF" $dry_flag --stage "$name" > "$OUT/$name.log" 2>&1
    rc=$?
    seconds=$(seconds_since "$start")
    [ -n "$results" ] && collect "$results" "$OUT/$name"
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$seconds" "$limit" >> "$OUT/stages.tsv"
    progress "end $name: $status (exit status $rc) in ${seconds}s; log: $name.log"
    [ "$rc" = 0 ]
}

printf 'stage\tstatus\texit_status\tseconds\tlimit_seconds\n' > "$OUT/stages.tsv"
progress "gpu_check on $(hostname), device $DEVICE, budget ${BUDGET_SECONDS}s; results in $OUT"
if [ "$DRY_RUN" = 0 ] && command -v nvidia-smi >/dev/null; then
    # Utilisation and memory every second, for the whole run (the share stage's two runs show here).
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 1 \
        > "$OUT/gpu_usage.csv" 2>&1 &
    MONITOR=$!
fi

run_stage env 60 0 || FAILED=$((FAILED + 1))
if [ "$DRY_RUN" = 0 ]; then
    run_stage install 120 0 || FAILED=$((FAILED + 1))
fi
run_stage data 90 0 || FAILED=$((FAILED + 1))
# The smoke and resume runs check behaviour, not speed: they share the GPU to save a minute.
run_stage smoke 180 30 "$WORK/smoke/smoke" & SMOKE=$!
run_stage resume 180 30 "$WORK/resume" & RESUME=$!
wait "$SMOKE" || FAILED=$((FAILED + 1))
wait "$RESUME" || FAILED=$((FAILED + 1))
run_stage benchmark 180 45 || FAILED=$((FAILED + 1))
run_stage timed 240 60 "$WORK/timed" || FAILED=$((FAILED + 1))
run_stage share 150 45 "$WORK/share" || FAILED=$((FAILED + 1))
run_stage compile 300 60 "$WORK/compile" || FAILED=$((FAILED + 1))

progress "summary"
"$PY" - "$OUT" > "$OUT/summary.txt" 2>&1 <<'EOF'
import csv, json, os, statistics, sys
out = sys.argv[1]
def load(path):
    try:
        return json.load(open(os.path.join(out, path)))
    except (OSError, ValueError):
        return None
print("stages (stages.tsv):")
for row in csv.DictReader(open(os.path.join(out, "stages.tsv")), delimiter="\t"):
    print(f"  {row['stage']:10s} {row['status']:8s} {row['seconds'] or '-':>7s} s (limit {row['limit_seconds'] or '-'})")

if os.path.isfile(os.path.join(out, "benchmark.txt")):
    print("\nbenchmark (benchmark.txt):" + open(os.path.join(out, "benchmark.txt")).read().rstrip())

def epochs(folder):
    """{run: {dendrites: (steady seconds per epoch, first epoch's extra, epochs)}} from the copied histories."""
    runs = {}
    for run in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, run, "history.csv")
        if not os.path.isfile(path):
            continue
        groups = {}
        for row in csv.DictReader(open(path)):
            groups.setdefault(int(row.get("dendrites") or 0), []).append(float(row["seconds"]))
        runs[run] = {count: (statistics.median(s[1:] or s), max(0.0, s[0] - statistics.median(s[1:] or s)), len(s))
                     for count, s in groups.items()}
    return runs

timed, compiled = epochs(os.path.join(out, "timed")), epochs(os.path.join(out, "compile"))
for name in ("timed", "compile"):
    projection = load(f"{name}/projection.json")
    if projection:
        print(f"\nprojected wall time of the default experiment ({name}): {projection['projected_seconds'] / 3600:.2f} h")
        for run, p in projection["runs"].items():
            print(f"  {run:20s} {p['projected_seconds'] / 60:7.1f} min")
if timed or compiled:
    print("\nseconds per epoch (steady; +first epoch's extra), without and with --compile:")
    for run in sorted(set(timed) | set(compiled)):
        for count in sorted(set(timed.get(run, {})) | set(compiled.get(run, {}))):
            cells = []
            for runs in (timed, compiled):
                e = runs.get(run, {}).get(count)
                cells.append(f"{e[0]:7.2f} (+{e[1]:6.1f}, {e[2]} epochs)" if e else f"{'-':>25s}")
            print(f"  {run:20s} {count} dendrites  {cells[0]}   {cells[1]}")
share = load("share.json")
if share:
    print(f"\ntwo runs at once on one device: {share['epoch_throughput_ratio']:.2f}x the images/s of one alone; "
          f"wall time {share['pair_wall_seconds']:.0f}s for both against {share['alone_wall_seconds']:.0f}s for one "
          f"({share['wall_speedup_of_sharing']:.2f}x faster than one after the other)")
EOF
cat "$OUT/summary.txt"
progress "done: $FAILED stage(s) failed, timed out or skipped; everything is in $OUT"
[ "$FAILED" = 0 ]
