#!/bin/bash
# Device-only setup + run of tritonmix.bench.realpair on the H100 image (torch in /opt/torch/.venv, no network).
# Needs .whl/ (git-excluded, carried): triton-slim.tar.xz, numpy 1.26.4, diffusers, tritonclient, python-rapidjson,
# gevent, greenlet, zope.event, zope.interface, geventhttpclient, brotli wheels (cp312). Modifies that venv: throwaway machines only.
set -o pipefail
P=/opt/torch/.venv/bin/python3
if [ ! -d /tmp/tt/pytriton ]; then
  mkdir -p /tmp/tt && tar xJf .whl/triton-slim.tar.xz -C /tmp/tt
  $P -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl 2>&1 | tail -3
  $P -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -3
fi
export TRITONMIX_TRITONSERVER_ROOT=/tmp/tt/pytriton/tritonserver PYTHONUNBUFFERED=1
check() { $P -c "from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline; from tritonmix.exporters.tiny import tiny_stable_diffusion; tiny_stable_diffusion(0); print('diffusers import ok')" 2>&1; }
for extra in "" "scipy scikit-learn" "pandas sentence-transformers" "torchvision"; do
  [ -n "$extra" ] && { echo "numpy-2-only packages in the way: removing $extra on this throwaway machine"; $P -m pip uninstall -y -q $extra; }
  check > /tmp/check.txt
  if grep -q "import ok" /tmp/check.txt; then echo "import ok after removing: ${extra:-nothing}"; break; fi
  grep -o "site-packages/[A-Za-z_0-9]*" /tmp/check.txt | sort | uniq -c | sort -rn | head -8; grep -i "error" /tmp/check.txt | head -5
done
timeout ${RP_TIMEOUT:-480} $P -m tritonmix.bench.realpair --out $OUT "$@" 2>&1 | grep -v '^\[transformers\]' | tee $OUT/log.txt
rc=$?
for f in /tmp/tritonserver-*.log; do echo "== $f"; grep -v "^\[transformers\]" "$f" | grep -i -B2 -A12 "error\|traceback" | head -60; done > $OUT/server_errors.txt 2>&1
exit $rc
