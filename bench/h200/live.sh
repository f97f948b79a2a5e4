# On the H200 (device tool): fidoctor run over a cold default-set build. Carry .whl (the
# apache-tvm-ffi cp312 and pyelftools wheels, flashinfer-0.7.2.post1-site.tar.gz).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
tar -xzf .whl/flashinfer-*-site.tar.gz -C /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NO_COLOR=1
export FLASHINFER_WORKSPACE_BASE=/tmp/ws XDG_STATE_HOME=/tmp/state XDG_CACHE_HOME=/tmp/xcache
mkdir -p /tmp/ws
python3 -c 'import torch,flashinfer;print(torch.__version__,flashinfer.__version__,torch.cuda.get_device_name())'
nproc; nvcc --version | tail -1
python3 bench/h200/live_default_set.py
tail -25 $OUT/fidoctor.err
