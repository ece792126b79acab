#!/usr/bin/env bash
# The device check's kit, built here: the device machine reaches no package index, and its image lacks
# pyautoattack and may hold another timm. Both are pure Python; they go into .device_kit/site (ignored by git).
# pyautoattack's 45 MB example model is left out so that the tree plus the kit stays under the 64 MiB a device
# call carries; gpu_check.py's eval section then uses the bundled natural 5k ResNet-18 instead.
#
#   bash benchmarks/device_kit.sh        # here, once per checkout
#
# then one device call, carrying .device_kit (a 540 s limit leaves time to rerun within 15 minutes):
#
#   export PYTHONPATH=$PWD/.device_kit/site:$PWD PYTHONUNBUFFERED=1; set -o pipefail;
#   python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.device_kit
timm_version=$(python3 -c 'import timm; print(timm.__version__)')
rm -rf "$kit"
python3 -m pip install -q --no-deps --no-compile --target "$kit/site" "timm==$timm_version" "pyautoattack==0.2.0"
rm -f "$kit/site/pyautoattack/examples/model_test.pt" "$kit/site/pyautoattack/examples/tf_model.weight.h5"
tree_bytes=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null || true) | awk 'END {print $1}')
kit_bytes=$(du -sb "$kit" | cut -f1)
total_mib=$(( (tree_bytes + kit_bytes) / 1048576 ))
echo "kit: timm $timm_version, pyautoattack 0.2.0 (code only) in $kit ($(( kit_bytes / 1024 )) KiB); tree + kit ${total_mib} MiB"
if (( total_mib >= 64 )); then
    echo "tree + kit is ${total_mib} MiB, over the 64 MiB a device call carries: remove untracked files" >&2
    exit 2
fi
