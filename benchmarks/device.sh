#!/usr/bin/env bash
# benchmarks/device.sh [OUT]: mia's GPU checks on a bare, offline GPU machine, in under 8 minutes.
#
# Needs the wheels of `make device-wheels` in .whl/ (sent with the working tree) and a python3 that
# holds torch, lightning and the rest of the machine's image. Installs the wheels into $MIA_DEVICE_SITE
# (default /tmp/site), then runs, each part under its own time limit so that one hang costs only
# that part:
#   bench_tiny, bench_vit_b32   training samples/s and MFU, pipeline against a plain loop (benchmarks/bench.py)
#   bench_loader                224 px JPEG loader images/s, one process and one worker per core
#   gpu_tests                   the tests marked gpu (pytest -m gpu)
#   e2e                         one short job: train the target, then white-box attacks, on the GPU
# Writes into OUT (default outputs/bench/): the benchmarks' JSON, device.json (each part's exit
# code, seconds and log; rewritten after every part, so what ran is kept whatever fails later),
# logs/<part>.log, gpu_tests.xml, e2e_results.json and e2e_target.json.
#
# MIA_DEVICE_TOY=1: every part at toy size (seconds on a CPU; tests/test_device_script.py).
# MIA_DEVICE_BUDGET_S: the whole script's time limit in seconds (default 470).
# PYTHON: the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/bench}
PY=${PYTHON:-python3}
SITE=${MIA_DEVICE_SITE:-/tmp/site}
TOY=${MIA_DEVICE_TOY:-0}
DEADLINE=$(( $(date +%s) + ${MIA_DEVICE_BUDGET_S:-470} ))
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/device.json

say() { echo "[device.sh $(date -u +%H:%M:%S)] $*"; }

# record PART RC SECONDS BUDGET: the part's outcome into device.json (created on first use).
record() {
    "$PY" - "$SUMMARY" "$@" <<'EOF'
import json, sys
from pathlib import Path
path, part, rc, seconds, budget = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
summary = json.loads(path.read_text()) if path.exists() else {"parts": {}}
summary["parts"][part] = {"rc": rc, "seconds": seconds, "budget_s": budget, "timed_out": rc in (124, 137),
                          "skipped": rc == -1, "log": f"logs/{part}.log"}
path.write_text(json.dumps(summary, indent=1))
EOF
}

# part NAME BUDGET_S CMD...: CMD under `timeout`, cut to what is left of the deadline, logged.
part() {
    local name=$1 budget=$2
    shift 2
    local left=$(( DEADLINE - $(date +%s) ))
    (( budget > left )) && budget=$left
    if (( budget < 5 )); then
        say "$name: skipped, the script's time is spent"
        record "$name" -1 0 "$budget"
        return
    fi
    say "$name: up to ${budget}s: $*"
    local t0=$SECONDS
    timeout -k 10 "$budget" "$@" >"$OUT/logs/$name.log" 2>&1
    local rc=$?
    record "$name" "$rc" "$(( SECONDS - t0 ))" "$budget"
    say "$name: exit $rc after $(( SECONDS - t0 ))s (log: $OUT/logs/$name.log)"
    tail -n 5 "$OUT/logs/$name.log"
}

rm -f "$SUMMARY"
# --- the wheels the machine lacks (make device-wheels) ---
if ! ls .whl/*.whl >/dev/null 2>&1; then
    say "no wheels in .whl/: run 'make device-wheels' where PyPI is reachable, and send .whl/ along"
    exit 2
fi
PIP_INSTALL="'$PY' -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target '$SITE'"
# the image normally has pytest; the wheels in .whl/pytest/ are the fallback
part install 30 bash -c "$PIP_INSTALL .whl/*.whl && { '$PY' -c 'import pytest' 2>/dev/null || $PIP_INSTALL .whl/pytest/*.whl; }"
export PYTHONPATH=$SITE:$PWD
part machine 20 "$PY" -c "
import json, os, platform, torch
gpu = torch.cuda.is_available()
info = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,
        'gpu': torch.cuda.get_device_name(0) if gpu else None, 'cores': len(os.sched_getaffinity(0)),
        'gpu_memory_gb': torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else None}
json.dump(info, open('$OUT/machine.json', 'w'), indent=1)
print(info)"

# --- (a) benchmarks: MFU of the tiny model and ViT-B/32, and the loader on every core ---
CORES=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
if [[ $TOY == 1 ]]; then
    part bench_tiny 120 "$PY" -m benchmarks.bench --models tiny --loader-images 0 --steps 3 --batch-size 16 \
        --pairs 64 --no-compile --out "$OUT"
    record bench_vit_b32 -1 0 0  # ViT-B/32 on a CPU takes minutes: not at toy size
    part bench_loader 120 "$PY" -m benchmarks.bench --models "" --loader-images 64 --workers 2 --out "$OUT"
else
    # --no-compile: the pipeline as train.compile=false (the default) runs it; compiling would take
    # a minute of the budget per model
    part bench_tiny 60 "$PY" -m benchmarks.bench --models tiny --loader-images 0 --steps 100 --no-compile --out "$OUT"
    part bench_vit_b32 90 "$PY" -m benchmarks.bench --models vit_b32 --loader-images 0 --steps 50 --no-compile \
        --out "$OUT"
    part bench_loader 75 "$PY" -m benchmarks.bench --models "" --loader-images 4096 --workers "$CORES" --out "$OUT"
fi

# --- (b) the GPU tests; only the files that hold some, so a module whose imports the image lacks
# (wandb, say) cannot stop the collection ---
mapfile -t GPU_TESTS < <(grep -rl "pytest.mark.gpu" tests --include="test_*.py" | sort)
if (( ${#GPU_TESTS[@]} )); then
    part gpu_tests 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu --junitxml="$OUT/gpu_tests.xml" "${GPU_TESTS[@]}"
else
    say "gpu_tests: no test file marks a test gpu"
    record gpu_tests -1 0 0
fi

# --- (c) one short job on the GPU: train, features, white-box attacks ---
E2E=(debug=small logger=none "paths.root_dir=$OUT/e2e")
if [[ $TOY == 1 ]]; then
    # on a CPU the white-box attacks take minutes (paramgrad's per-pair gradients most): the toy run
    # checks the job's path with one white-box attack
    E2E+=("attack=[csa,gradnorm]" train.epochs=1 n_bootstrap=10) && E2E_S=120
else
    E2E+=("attack=[csa,gradnorm,mcd,aea,txtagree,paramgrad]" attack.aea.repeats=1 attack.mcd.passes=2
          attack.txtagree.repeats=2) && E2E_S=75
fi
part e2e "$E2E_S" "$PY" run.py "${E2E[@]}"
results=$(ls -t "$OUT"/e2e/outputs/runs/*/results.json 2>/dev/null | head -n 1)
if [[ -n $results ]]; then
    cp "$results" "$OUT/e2e_results.json"
    "$PY" - "$results" "$OUT/e2e_target.json" <<'EOF'
import json, shutil, sys
from pathlib import Path
res = json.loads(Path(sys.argv[1]).read_text())
shutil.copy(Path(res["target"]["checkpoint"]).parent / "target.json", sys.argv[2])
EOF
fi
say "done: $SUMMARY"
cat "$SUMMARY"
