# Sourced by the device scripts (ground.sh, warmup.sh) after they set DEADLINE and A (their work
# dir): the clock, a fresh work dir, FlashInfer 0.7.2.post1 + the carried wheels into /tmp/site
# (the H200 machine has no network: carry .whl), the environment, and the time helpers.
set -u
T0=$(date +%s)
rm -rf "$A"; mkdir -p "$A"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
tar -xzf .whl/flashinfer-*-site.tar.gz -C /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NO_COLOR=1
export XDG_STATE_HOME=/tmp/state XDG_CACHE_HOME=/tmp/xcache
unset FLASHINFER_CUDA_ARCH_LIST TORCH_CUDA_ARCH_LIST MAX_JOBS
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
now() { date +%s.%N; }
