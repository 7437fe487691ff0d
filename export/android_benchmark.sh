#!/usr/bin/env bash
# Measures a .tflite file on an Android phone with the official LiteRT/TFLite
# benchmark_model binary: push the model and the binary, run, print the
# timings, remove what was pushed (also when the run fails).
#
# The same steps as keras_kd.benchmark.benchmark_android, for use by hand.
# See export/ANDROID.md for where to get benchmark_model.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: android_benchmark.sh [options] MODEL.tflite BENCHMARK_MODEL_BINARY [-- EXTRA_FLAGS...]

Pushes MODEL.tflite and the benchmark_model binary (built for the phone's ABI,
e.g. android_aarch64_benchmark_model) to the device, runs it and prints the
timings, then removes the pushed files.

Options:
  -s SERIAL      device serial (needed when several devices are attached;
                 $ANDROID_SERIAL is used when set)
  -t THREADS     CPU threads (default 4)
  -w RUNS        warm-up runs, never counted (default 10)
  -r RUNS        counted runs (default 100)
  -m MASK        hexadecimal CPU affinity mask for taskset, e.g. f0 (big cores
                 on many phones); default: no pinning
  -d DIR         directory on the device (default /data/local/tmp/keras_kd)
  -g             use the GPU delegate      (--use_gpu=true)
  -n             use the NNAPI delegate    (--use_nnapi=true)
  -x             disable XNNPACK           (--use_xnnpack=false)
  -h             show this help

Anything after -- goes to benchmark_model unchanged, e.g. -- --min_secs=0
Environment: ADB=/path/to/adb to use another adb than the one on PATH.

Example:
  export/android_benchmark.sh -t 1 -m f0 student_int8.tflite android_aarch64_benchmark_model
USAGE
}

die() {
  echo "android_benchmark.sh: error: $*" >&2
  exit 1
}

ADB="${ADB:-adb}"
SERIAL="${ANDROID_SERIAL:-}"
THREADS=4
WARMUP=10
RUNS=100
MASK=""
DEVICE_DIR="/data/local/tmp/keras_kd"
USE_GPU=false
USE_NNAPI=false
USE_XNNPACK=true

while getopts ":s:t:w:r:m:d:gnxh" option; do
  case "$option" in
    s) SERIAL="$OPTARG" ;;
    t) THREADS="$OPTARG" ;;
    w) WARMUP="$OPTARG" ;;
    r) RUNS="$OPTARG" ;;
    m) MASK="$OPTARG" ;;
    d) DEVICE_DIR="${OPTARG%/}" ;;
    g) USE_GPU=true ;;
    n) USE_NNAPI=true ;;
    x) USE_XNNPACK=false ;;
    h) usage; exit 0 ;;
    :) usage >&2; die "option -$OPTARG needs a value" ;;
    *) usage >&2; die "unknown option -$OPTARG" ;;
  esac
done
shift $((OPTIND - 1))

if [ "$#" -lt 2 ]; then
  usage >&2
  exit 2
fi
MODEL="$1"
BINARY="$2"
shift 2
if [ "$#" -gt 0 ]; then
  [ "$1" = "--" ] || { usage >&2; die "unexpected argument '$1' (extra benchmark_model flags go after --)"; }
  shift
fi
EXTRA_FLAGS=("$@")

[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "-t THREADS must be an integer >= 1, got '$THREADS'"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "-w RUNS must be an integer >= 0, got '$WARMUP'"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "-r RUNS must be an integer >= 1, got '$RUNS'"
if [ -n "$MASK" ]; then
  [[ "$MASK" =~ ^(0x)?[0-9a-fA-F]+$ ]] || die "-m MASK must be a hexadecimal affinity mask such as f0, got '$MASK'"
fi
case "$DEVICE_DIR" in
  /?*) ;;
  *) die "-d DIR must be an absolute directory on the device other than /, got '$DEVICE_DIR'" ;;
esac
[ -f "$MODEL" ] || die "no model file at '$MODEL'"
[ -f "$BINARY" ] || die "no benchmark_model binary at '$BINARY'. Download android_aarch64_benchmark_model from
  https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/android_aarch64_benchmark_model
  or build it with bazel (see export/ANDROID.md)"
command -v "$ADB" >/dev/null 2>&1 || die "'$ADB' not found. Install the Android SDK platform-tools
  (https://developer.android.com/tools/releases/platform-tools, or 'sudo apt-get install adb') or set ADB=/path/to/adb"

# Pick the device: the serial given, or the only one attached.
DEVICES="$("$ADB" devices | sed '1d' | awk 'NF >= 2 { print $1 " " $2 }')"
if [ -z "$SERIAL" ]; then
  READY="$(printf '%s\n' "$DEVICES" | awk '$2 == "device" { print $1 }')"
  COUNT="$(printf '%s\n' "$READY" | grep -c . || true)"
  if [ "$COUNT" -eq 0 ]; then
    if [ -n "$DEVICES" ]; then
      die "no usable device: $(printf '%s' "$DEVICES" | tr '\n' ';'). Unauthorized: accept the USB debugging prompt on the phone; offline: reconnect it"
    fi
    die "no Android device attached ('$ADB devices' lists none). Enable USB debugging and connect the phone"
  fi
  if [ "$COUNT" -gt 1 ]; then
    die "several devices attached ($(printf '%s' "$READY" | tr '\n' ' ')); pick one with -s SERIAL"
  fi
  SERIAL="$READY"
else
  STATE="$(printf '%s\n' "$DEVICES" | awk -v s="$SERIAL" '$1 == s { print $2 }')"
  [ -n "$STATE" ] || die "no device with serial '$SERIAL' is attached"
  [ "$STATE" = "device" ] || die "device '$SERIAL' is '$STATE' (unauthorized: accept the USB debugging prompt; offline: reconnect)"
fi

adb_s() { "$ADB" -s "$SERIAL" "$@"; }

REMOTE_MODEL="$DEVICE_DIR/$(basename "$MODEL")"
REMOTE_BINARY="$DEVICE_DIR/benchmark_model"
cleanup() {
  adb_s shell "rm -f '$REMOTE_MODEL' '$REMOTE_BINARY'" >/dev/null 2>&1 || true
  adb_s shell "rmdir '$DEVICE_DIR'" >/dev/null 2>&1 || true
}
trap cleanup EXIT

DEVICE_MODEL="$(adb_s shell getprop ro.product.model | tr -d '\r')"
echo "Device: ${DEVICE_MODEL:-unknown} ($SERIAL)"
adb_s shell "mkdir -p '$DEVICE_DIR'" >/dev/null
adb_s push "$MODEL" "$REMOTE_MODEL" >/dev/null
adb_s push "$BINARY" "$REMOTE_BINARY" >/dev/null
adb_s shell "chmod +x '$REMOTE_BINARY'" >/dev/null

RUN="'$REMOTE_BINARY' --graph='$REMOTE_MODEL' --num_threads=$THREADS --use_gpu=$USE_GPU --use_nnapi=$USE_NNAPI"
RUN="$RUN --use_xnnpack=$USE_XNNPACK --warmup_runs=$WARMUP --num_runs=$RUNS"
for flag in "${EXTRA_FLAGS[@]+"${EXTRA_FLAGS[@]}"}"; do
  RUN="$RUN '$flag'"
done
if [ -n "$MASK" ]; then
  RUN="taskset ${MASK#0x} $RUN"
fi
echo "Running: $RUN"

STATUS=0
OUTPUT="$(adb_s shell "$RUN" 2>&1)" || STATUS=$?
printf '%s\n' "$OUTPUT"
echo "----- summary -----"
if ! printf '%s\n' "$OUTPUT" | grep -iE "count=|inference timings in us|memory footprint" ; then
  die "benchmark_model printed no timings (exit status $STATUS); see its output above"
fi
if [ "$STATUS" -ne 0 ]; then
  die "benchmark_model exited with status $STATUS"
fi
