#!/usr/bin/env bash
# Gets ready, on a machine where pip reaches the registry, what benchmarks/gpu.sh needs on the GPU
# machine, which reaches nothing: the wheels it lacks in .whl/ and SmolLM2's tokenizer in .bench/.
# Both folders are git-ignored; the device call names them in `carry`.
#
#   bash benchmarks/gpu_wheels.sh            # everything (bitsandbytes is 41 MiB of the ~52)
#   bash benchmarks/gpu_wheels.sh --no-bnb   # without bitsandbytes: the QLoRA rows are then skipped
#
# The GPU machine (python 3.12, torch 2.11, transformers 5.17, peft, accelerate, triton, pandas,
# pyarrow, xxhash, ...: the device docs' KINDS.md) lacks TRL and what it feeds on (datasets, dill,
# multiprocess), liger-kernel, bitsandbytes, and Tuneforge's own pydantic, SQLAlchemy and Alembic.
# Never carry torch or transformers: the machine's CUDA build is the one to use. peft is carried at
# the version Tuneforge pins (its fused LoRA layers reach into peft's), typing-extensions because
# pydantic needs a recent one. Pure-python wheels download with the same platform flags;
# manylinux_2_24 is there for bitsandbytes (pip matches each tag exactly).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  trl==1.16.0
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
  liger-kernel==0.8.5
  peft==0.21.2
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  sqlalchemy==2.1.9
  alembic==1.20.1
  mako==1.4.3
)
[[ "${1:-}" == "--no-bnb" ]] || WHEELS+=(bitsandbytes==0.50.2)

rm -rf .whl.partial && mkdir -p .whl.partial
for wheel in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl.partial "$wheel" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
done
rm -rf .whl && mv .whl.partial .whl  # one version of each: two would stop the install there

# SmolLM2's tokenizer, from the catalog's converted bundled model (converted on first use).
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python
rm -rf .bench/tokenizer
"$python" -c "
from tuneforge.models.catalog import load_tokenizer
load_tokenizer('smollm2-135m-instruct').save_pretrained('.bench/tokenizer')
"

ls -l .whl .bench/tokenizer
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "wheels $(du -cb .whl/*.whl | tail -1 | cut -f1) bytes, tokenizer $(du -cb .bench/tokenizer | tail -1 | cut -f1)" \
  "bytes, tracked files ${tree} bytes: $(( ($(du -cb .whl .bench/tokenizer | tail -1 | cut -f1) + tree) / 1048576 ))" \
  "MiB of the device call's 64 MiB (untracked files that git does not ignore travel too)"
