#!/usr/bin/env bash
# A CI fleet sharing one remote cache (docs/msbuild.md): four clones of this repository in separate folders, each
# with its own empty local cache, build the sample project one after another against one nginx (WebDAV PUT) on
# 127.0.0.1. The first computes and uploads; the other three are served by the remote. Reports each build's wall
# time, whether the engine ran its analysis, and the remote hit's time against the local compute it replaced.
# Each clone's engine is built before the timed build (agents keep their tool builds), so the times are the
# sample's build alone. Usage: bash benchmarks/fleet-benchmark.sh   (needs nginx; .ci/run installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 18931)
mkdir -p "$work/www" "$work/tmp"
cat > "$work/nginx.conf" <<EOF
daemon on;
master_process off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 64; }
http {
  access_log $work/access.log;
  client_body_temp_path $work/tmp;
  proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server {
    listen 127.0.0.1:$port;
    root $work/www;
    location / { dav_methods PUT; create_full_put_path on; client_max_body_size 1g; autoindex on; autoindex_format json; }
  }
}
EOF
"$nginx" -c "$work/nginx.conf" -p "$work"
url="http://127.0.0.1:$port/"

seconds() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }'; }

echo "## Fleet: four clones, one remote cache ($url)"
echo "| agent | folder | sample build s | engine s | engine stages | remote |"
echo "|---:|---|---:|---:|---|---|"
first=""
for agent in 1 2 3 4; do
  clone="$work/agent$agent/checkout-$RANDOM"
  git clone -q --no-hardlinks "$repo" "$clone"
  # The agent's tools: the engine and task assembly built from its own clone (untimed).
  dotnet build "$clone/src/QuantTasks.Cli" -c Release -nodeReuse:false -tl:off -v:q >/dev/null
  dotnet build "$clone/src/QuantTasks.Tasks" -c Release -nodeReuse:false -tl:off -v:q >/dev/null
  build() { dotnet build "$clone/sample-project" -nodeReuse:false -tl:off -v:q -p:QuantCacheDirectory="$clone/.quant-cache" -p:QuantCacheUrl="$url" >/dev/null; }
  t=$(seconds build)
  report="$clone/sample-project/obj/Debug/net10.0/quant/out/report.json"
  stages=$(tr -d '\n ' < "$report" | grep -o '"stages":{[^}]*}' | sed 's/"stages":{//; s/}//; s/"//g')
  engine=$(echo "$stages" | tr ',' '\n' | awk -F: '{ s += $2 } END { printf "%.2f", s }')
  hit=$(grep -q '"cache_hit": true' "$report" && echo hit || echo "computed, uploaded")
  echo "| $agent | agent$agent/… | $t | $engine | $stages | $hit |"
  if [ -z "$first" ]; then first=$t; else hits+=("$t"); fi
done
mean=$(printf '%s\n' "${hits[@]}" | awk '{ s += $1 } END { printf "%.1f", s / NR }')
echo
echo "| | seconds |"
echo "|---|---:|"
echo "| local compute (agent 1) | $first |"
echo "| remote hit (mean of agents 2-4) | $mean |"
awk -v a="$mean" -v b="$first" 'BEGIN { printf "| ratio hit / compute | %.2f |\n", a / b }'
echo "entries on the server: $(find "$work/www" -name '*.qtc' | wc -l), $(find "$work/www" -name '*.qtc' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }') bytes"
