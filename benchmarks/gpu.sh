#!/usr/bin/env bash
# The GPU benchmark in one command, on the lent GPU machine (benchmarks/gpu.py says what it measures).
# Prepare here first: `bash benchmarks/gpu_wheels.sh` (the wheels that machine lacks in .whl/, SmolLM2's
# tokenizer in .bench/tokenizer), then call the device tool's run with
#   command: bash benchmarks/gpu.sh      carry: [".whl", ".bench/tokenizer"]      timeout_s: 600
# It installs the carried wheels into /tmp/site (the machine's own torch and transformers stay the
# ones used), prints the versions, and runs `python -m benchmarks.gpu "$@"`, which writes gpu.md,
# gpu.json and gpu.log to $OUT (else .bench/out) after every row. `bash benchmarks/gpu.sh --smoke`
# runs the same on a CPU with a tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONPATH="$PWD"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 - <<'EOF'
from importlib import metadata

def version(name):
    try:
        return metadata.version(name)  # the first on sys.path: a carried wheel before the machine's
    except metadata.PackageNotFoundError:
        return "-"

names = "torch transformers peft accelerate trl datasets pyarrow fsspec liger-kernel triton bitsandbytes pydantic"
print(", ".join(f"{name} {version(name)}" for name in names.split()))
EOF
exec python3 -m benchmarks.gpu "$@"
