#!/usr/bin/env bash
# The GPU checks of the graph and packing paths, in one call of a GPU session (docs/speed.md, "The GPU path").
#
#   here, on the CPU machine, once:   bash benchmarks/gpu_check.sh prepare
#   on the GPU machine (OUT set):     bash benchmarks/gpu_check.sh            carry: .gpu, .whl
#
# What travels, and why `prepare` is needed:
# - tests/test_cuda.py itself uses neither mlflow nor optuna, but it imports tests.helpers (and pytest loads
#   tests/conftest.py, which imports it too), and tests.helpers imports p2p.tracking (mlflow, sqlalchemy)
#   and p2p.sweep.study (optuna). The GPU image has neither: they travel as wheels in .whl
#   (/work/.library/device/README.md, "a Python package missing there"), the client mlflow-skinny standing
#   in for mlflow (same version; no UI, a few MB instead of ~30), all for its Python 3.12 (22 distributions,
#   read from what importing the tests loads here; see `names` below).
# - its tests ask for the lab's shared data (facades), which sits beside the checkout (../shared) and does
#   not travel: without it every CUDA test would be *skipped* ("shared data absent") and pytest would still
#   pass. `prepare` copies facades into .gpu/shared, with an empty stand-in for the VGG weights file that
#   tests.helpers.shared_present() looks for (test_cuda.py scores SSIM, PSNR and L1 only: nothing reads it),
#   and this script fails if any test was skipped.
# Both folders are listed in .git/info/exclude, so that they are never committed.
#
# On the GPU machine everything runs under `timeout`; the four parts together stay under 9 minutes, and
# each writes its log (and the bench parts their JSON report) to $OUT as it goes: 8 files at most.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
    shared=${P2P_SHARED:-../shared}
    mkdir -p .git/info
    for folder in .gpu .whl; do
        grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >>.git/info/exclude
    done
    rm -rf .gpu && mkdir -p .gpu/shared/data .gpu/shared/weights
    cp -r "$shared/data/facades" .gpu/shared/data/
    : >.gpu/shared/weights/vgg16-features-imagenet.pth  # a stand-in: see above
    # The distributions whose modules `import tests.conftest, tests.test_cuda, benchmarks.throughput` loads here
    # and that the GPU image lacks (KINDS.md's package list, 2026-11-17), at the versions in .venv (the lock's).
    # mlflow-skinny holds the `mlflow` package's client, all that p2p.tracking imports.
    names=(mlflow-skinny mlflow-tracing optuna sqlalchemy sqlparse colorlog databricks-sdk google-auth cachetools
           opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions importlib-metadata
           pydantic pydantic-core annotated-types typing-inspection fastapi starlette sniffio pysocks)
    pins=()
    for name in "${names[@]}"; do
        version=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" \
                  2>/dev/null) || { echo "gpu_check prepare: $name is not in .venv, left out" >&2; continue; }
        pins+=("$name==$version")
    done
    rm -rf .whl && mkdir .whl
    for pin in "${pins[@]}"; do  # one at a time: a wheel pip cannot find is named, and the others still come
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$pin" || echo "gpu_check prepare: no wheel for $pin" >&2
    done
    du -sh .gpu .whl
    echo "carry: .gpu .whl (the two together must stay under 64 MiB with the working tree)"
    exit 0
fi

: "${OUT:?set OUT: the folder the logs and reports go to}"
[[ -d .gpu/shared ]] || { echo "gpu_check: no .gpu/shared: run 'bash benchmarks/gpu_check.sh prepare' here first" >&2; exit 2; }
export PYTHONUNBUFFERED=1 P2P_SHARED=$PWD/.gpu/shared P2P_DATA_ROOT=$PWD/.gpu/shared/data
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || exit 2
fi
failed=()
summary=$OUT/summary.md
{ echo "# gpu_check at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"; nvidia-smi -L; } >"$summary"

# 1. The CUDA tests: graph vs eager, determinism, resume, compile, packs on streams (~2 min). None may skip.
timeout 140 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
status=${PIPESTATUS[0]}
if [[ $status -ne 0 ]] || grep -q "SKIPPED" "$OUT/test_cuda.log"; then failed+=("tests/test_cuda.py"); fi

# The bench parts on CUDA alone, at the paper setting; each writes its own report, kept as $OUT/<part>.json.
bench() {  # bench PART SECONDS ARGS...
    local part=$1 seconds=$2
    shift 2
    timeout "$seconds" python3 -m benchmarks.bench --devices cuda --settings paper --out "/tmp/gpu_check-$part" "$@" \
        2>&1 | tee "$OUT/$part.log"
    if [[ ${PIPESTATUS[0]} -ne 0 ]]; then failed+=("bench $part"); fi
    if [[ -f /tmp/gpu_check-$part/latest.json ]]; then
        cp "/tmp/gpu_check-$part/latest.json" "$OUT/$part.json"
        { echo; cat "/tmp/gpu_check-$part/latest.md"; } >>"$summary"
        # the bench goes on past a row that fails (out of memory, a capture refused): here any such row fails
        if grep -q '"error"' "$OUT/$part.json"; then failed+=("bench $part (rows with errors)"); fi
    else
        failed+=("bench $part (no report)")
    fi
}
# 2. One step per variant: ms/iter, kernels per step, the GPU's busy share (~2 min; one compile).
bench train 120 --skip score,tracking,startup,data,sweep,epoch --repeats 1 --iters 50 --budget 2 \
    --variants "baseline,p2p fp32,p2p fp32 graph,p2p bf16 channels_last,p2p bf16 channels_last graph,p2p bf16 channels_last compile + graph"
# 3. The sweep view: 1, 4, 8 processes and packs of 4, 8, eager and graphed (~2.5 min; rows logged as they come).
bench sweep 160 --skip train,score,tracking,startup,data,epoch --sweep-seconds 4 --sweep-counts 1,4,8 \
    --sweep-variants "p2p bf16 channels_last,p2p bf16 channels_last graph"
# 4. Real epochs through p2p train, 200 facades, the second of three counted, checkpoint included (~1.5 min; one compile).
bench epoch 120 --skip train,score,tracking,startup,data,sweep --epoch-images 200

if ((${#failed[@]})); then
    echo "gpu_check: FAILED: ${failed[*]}" | tee -a "$summary"
    exit 1
fi
echo "gpu_check: all passed" | tee -a "$summary"
