#!/usr/bin/env bash
# Verifies the GPU path on a CUDA machine (docs/speed.md, "Running the GPU checks on a CUDA machine"):
# tests/test_cuda.py, failing if any test is skipped (the graph against the eager step, determinism, resume,
# compile, packs on streams), then `make bench`'s GPU rows at the paper setting: one step per variant, the sweep
# view, real epochs. Its verdict decides p2p.step.GRAPH_VERIFIED_ON_GPU and AUTO_PACK["cuda"] (docs/speed.md).
#
#   with the project installed and ../shared (or P2P_SHARED) beside it:   OUT=dir bash benchmarks/gpu_check.sh
#   for a GPU machine with only PyTorch:   bash benchmarks/gpu_check.sh prepare   (where the project is installed),
#                                          then OUT=dir bash benchmarks/gpu_check.sh there, with .gpu/ and .whl/
#
# What it needs beside the repository:
# - the facades dataset. Without it every CUDA test would be *skipped* ("shared data absent") and pytest would
#   still pass, so this script fails on any skip. `prepare` copies facades into .gpu/shared, with an empty
#   stand-in for the VGG weights file that tests.helpers.shared_present() looks for (test_cuda.py scores SSIM,
#   PSNR and L1 only: nothing reads it).
# - the Python packages the tests import. tests/test_cuda.py itself uses neither mlflow nor optuna, but pytest
#   loads tests/conftest.py, which imports tests.helpers, which imports p2p.tracking (mlflow, sqlalchemy) and
#   p2p.sweep.study (optuna). An image with only PyTorch, torchvision, NumPy, Pillow and pytest lacks them:
#   `prepare` downloads them as wheels into .whl for Python 3.12 on x86-64 Linux (`names` below: the client
#   mlflow-skinny standing in for mlflow, same version, a few MB instead of ~30), and this script installs them
#   into /tmp/site when .whl holds any.
# Both folders are listed in .git/info/exclude, so that they are never committed.
#
# Everything runs under `timeout`; the four parts together stay under 9 minutes, and each writes its log (and the
# bench parts their JSON report) to $OUT as it goes: 8 files at most.
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
    # The distributions whose modules `import tests.conftest, tests.test_cuda, benchmarks.throughput` loads beyond
    # PyTorch, torchvision, NumPy, Pillow and pytest, at the versions in .venv (the lock's). mlflow-skinny holds
    # the `mlflow` package's client, all that p2p.tracking imports.
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
    echo "take .gpu and .whl to the GPU machine, beside the checkout"
    exit 0
fi

: "${OUT:?set OUT: the folder the logs and reports go to}"
mkdir -p "$OUT"
if [[ -z "${P2P_SHARED:-}" ]]; then  # the data `prepare` copied, else the shared folder beside the checkout
    if [[ -d .gpu/shared ]]; then P2P_SHARED=$PWD/.gpu/shared; elif [[ -d ../shared/data/facades ]]; then P2P_SHARED=$(cd ../shared && pwd); fi
fi
[[ -d "${P2P_SHARED:-}/data/facades" ]] || {
    echo "gpu_check: no facades: set P2P_SHARED, put the shared data at ../shared, or run 'bash benchmarks/gpu_check.sh prepare' first" >&2
    exit 2
}
export PYTHONUNBUFFERED=1 P2P_SHARED P2P_DATA_ROOT=$P2P_SHARED/data
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python  # the project's environment where it is installed here
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || exit 2
fi
failed=()
summary=$OUT/summary.md
{ echo "# gpu_check at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"; nvidia-smi -L; } >"$summary"

# 1. The CUDA tests: graph vs eager, determinism, resume, compile, packs on streams (~2 min). None may skip.
timeout 140 "$python" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
status=${PIPESTATUS[0]}
if [[ $status -ne 0 ]] || grep -q "SKIPPED" "$OUT/test_cuda.log"; then failed+=("tests/test_cuda.py"); fi

# The bench parts on CUDA alone, at the paper setting; each writes its own report, kept as $OUT/<part>.json.
bench() {  # bench PART SECONDS ARGS...
    local part=$1 seconds=$2
    shift 2
    timeout "$seconds" "$python" -m benchmarks.bench --devices cuda --settings paper --out "/tmp/gpu_check-$part" "$@" \
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
