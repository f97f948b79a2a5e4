# Sourced by the phase scripts on the device machine: install the carried wheels and
# FlashInfer into /tmp/site, put fidoctor (this checkout) on PYTHONPATH, isolate state.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
tar -xJf .whl/flashinfer-*-site.tar.xz -C /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NO_COLOR=1
export FLASHINFER_WORKSPACE_BASE=/tmp/ws XDG_STATE_HOME=/tmp/state XDG_CACHE_HOME=/tmp/xcache
mkdir -p "$FLASHINFER_WORKSPACE_BASE" "$OUT/a"
fid() { python3 -m fidoctor "$@"; }
stamp() { date +%s.%N; }
el() { awk "BEGIN{printf \"%.1f\", $(stamp)-$1}"; }
snap_procs() {  # $1: file stem under $OUT/a
  { date; cat /proc/locks; echo; ps -eo pid,ppid,pgid,sid,stat,etimes,rss,wchan:24,comm,args --sort=pid \
    | grep -E 'ninja|nvcc|cicc|ptxas|cudafe|cc1plus|python|PID' | cut -c1-400; } > "$OUT/a/$1.txt" 2>&1
}
