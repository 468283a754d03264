#!/bin/bash -eu
# ClusterFuzzLite runs $SRC/build.sh; the build itself is shared with OSS-Fuzz.
set -euo pipefail
exec bash "$SRC/mnfuzz/ci/oss-fuzz/build.sh"
