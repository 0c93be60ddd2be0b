#!/usr/bin/env bash
# The build integration's cost, measured on the sample project (see docs/msbuild.md):
#   1. a cold build (empty cache, clean obj/): wall time, and the engine's time per stage from report.json;
#   2. a no-change rebuild against the same no-change rebuild with QuantEnabled=false (goal: at most 1.2x);
#   3. a rebuild after `dotnet clean`, which the content-hash cache answers.
# Usage: bash benchmarks/build-benchmark.sh [RUNS]   (default 7). Needs only the .NET SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
build() { dotnet build sample-project -nodeReuse:false -tl:off -v:q -p:QuantCacheDirectory="$cache" "$@" >/dev/null; }
seconds() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'; }
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm up the engine's own build (it is built from source in this repository) and NuGet.
build
dotnet clean sample-project -nodeReuse:false -v:q >/dev/null
rm -rf "${cache:?}"/*

echo "## Cold build of sample-project (empty cache, clean obj/)"
cold=$(seconds build)
report=sample-project/obj/Debug/net10.0/quant/out/report.json
echo "| | seconds |"
echo "|---|---:|"
echo "| whole dotnet build | $cold |"
# The engine's stages, from the report ("stages": {"load": s, ...}).
tr -d '\n ' < "$report" | grep -o '"stages":{[^}]*}' | sed 's/"stages":{//; s/}//' | tr ',' '\n' | tr -d '"' |
  awk -F: '{ printf "| engine: %s | %s |\n", $1, $2 }'

echo
echo "## No-change rebuild, median of $runs each"
# Each mode is primed by one build (which recompiles the app after the other mode) and then rebuilt with
# nothing changed; the blocks alternate twice so that drift in the machine's speed falls on both.
with=(); without=()
for _ in 1 2; do
  build -p:QuantEnabled=false
  for _ in $(seq "$runs"); do without+=("$(seconds build -p:QuantEnabled=false)"); done
  build
  for _ in $(seq "$runs"); do with+=("$(seconds build)"); done
done
m_with=$(echo "${with[*]}" | median)
m_without=$(echo "${without[*]}" | median)
echo "| build | median s |"
echo "|---|---:|"
echo "| QuantEnabled=false (baseline) | $m_without |"
echo "| QuantTasks, nothing changed | $m_with |"
awk -v a="$m_with" -v b="$m_without" 'BEGIN { printf "| ratio (goal <= 1.2) | %.2f |\n", a / b }'

echo
echo "## After dotnet clean: the content-hash cache answers"
dotnet clean sample-project -nodeReuse:false -v:q >/dev/null
echo "| build | seconds |"
echo "|---|---:|"
echo "| rebuild after clean (cache hit) | $(seconds build) |"
grep -q '"cache_hit": true' "$report" && echo "(report.json: cache_hit true)"
