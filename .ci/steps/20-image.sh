#!/usr/bin/env bash
# CI step: build the zai-proxy image and run it.
#  1. start a private Docker engine (Debian's docker.io; vfs storage, no iptables, no bridge);
#  2. build the base image from Debian packages with debootstrap (no registry is reachable):
#     the running release, minbase + python3, python3-venv, ca-certificates; the rootfs tarball
#     is cached under /var/cache/zai-proxy-ci and rebuilt after a week;
#  3. hadolint the Dockerfile, then `docker build` it (pip reaches the package index through the
#     host's network; the host's pip index URL and CA bundle are passed to the build stage only);
#  4. run the image offline (--network none) the way Kubernetes runs it (read-only root, all
#     capabilities dropped, no new privileges) and check: /health answers with the baked-in
#     version, build info is exported, a chat completion is served by the built-in simulator,
#     the process runs as uid 1000 and is PID 1, the HEALTHCHECK turns healthy, and SIGTERM
#     turns /ready to 503 at once and then exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${ZAI_CI_IMAGE_WORK:-/var/lib/zai-proxy-ci}
CACHE=${ZAI_CI_IMAGE_CACHE:-/var/cache/zai-proxy-ci}
SOCK="$WORK/docker.sock"
BASE_IMAGE=zai-proxy-base:local
IMAGE=zai-proxy:ci
# The engine package's own client: a newer client elsewhere on PATH would want buildx for BuildKit.
DOCKER_BIN=/usr/bin/docker
export DOCKER_HOST="unix://$SOCK" DOCKER_BUILDKIT=1
started=$(date +%s)
log() { echo "[20-image +$(($(date +%s) - started))s] $*"; }

for tool in dockerd "$DOCKER_BIN" debootstrap; do
  command -v "$tool" >/dev/null || { echo "missing $tool: .ci/apt-packages.txt installs docker.io and debootstrap" >&2; exit 1; }
done
mkdir -p "$WORK" "$CACHE"

dockerd_pid=""
cid=""
cleanup() {
  if [ -n "$cid" ]; then "$DOCKER_BIN" rm -f "$cid" >/dev/null 2>&1 || true; fi
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# -- 1. engine
if ! "$DOCKER_BIN" version >/dev/null 2>&1; then
  log "starting dockerd (data root $WORK/data)"
  dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
    --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "unix://$SOCK" >"$WORK/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 120); do
    "$DOCKER_BIN" version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$WORK/dockerd.log" >&2; exit 1; }
    sleep 0.5
  done
  "$DOCKER_BIN" version --format 'engine {{.Server.Version}}' || { tail -20 "$WORK/dockerd.log" >&2; exit 1; }
fi

# -- 2. base image from debootstrap
release=$(. /etc/os-release && echo "$VERSION_CODENAME")
arch=$(dpkg --print-architecture)
tarball="$CACHE/base-$release-$arch.tar"
if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +7)" ]; then
  # The Debian mirror this machine's apt already uses (classic or deb822 sources).
  mirror=$(python3 - "$release" <<'PY'
import glob, re, sys
release = sys.argv[1]
files = glob.glob("/etc/apt/sources.list") + sorted(glob.glob("/etc/apt/sources.list.d/*"))
for path in files:
    text = open(path, errors="replace").read()
    if path.endswith(".sources"):
        for block in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", block, re.M))
            if "deb" in fields.get("Types", "").split() and release in fields.get("Suites", "").split() \
                    and fields.get("Enabled", "yes") != "no":
                print(fields["URIs"].split()[0]); sys.exit(0)
    elif path.endswith(".list"):
        for line in text.splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line).split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == release:
                print(parts[1]); sys.exit(0)
sys.exit("no apt source for " + release)
PY
)
  log "debootstrap $release ($arch) from the host's apt mirror"
  rootfs=$(mktemp -d "$WORK/rootfs.XXXXXX")
  chmod 0755 "$rootfs"  # the image root: mktemp made it 0700
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$release" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
  # Package caches, indexes, docs and translations are not needed at run time.
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
fi
stamp=$(sha256sum "$tarball" | cut -c1-16)
if [ "$("$DOCKER_BIN" image inspect -f '{{index .Config.Labels "zai-proxy.base"}}' "$BASE_IMAGE" 2>/dev/null)" != "$stamp" ]; then
  log "importing $tarball as $BASE_IMAGE"
  "$DOCKER_BIN" import -c "LABEL zai-proxy.base=$stamp" -c 'CMD ["/bin/sh"]' "$tarball" "$BASE_IMAGE" >/dev/null
fi

# -- 3. lint and build
if command -v hadolint >/dev/null; then
  log "hadolint Dockerfile"
  hadolint Dockerfile
fi
version=$(python3 -c 'import zai_proxy; print(zai_proxy.__version__)' 2>/dev/null || echo dev)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
build_time=$(date -u +%Y-%m-%dT%H:%M:%SZ)
index_url=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}
case "$index_url" in http://* | https://*) ;; *) index_url="" ;; esac
ca=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
[ -s "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
log "docker build $IMAGE (version $version, commit ${commit:0:12})"
"$DOCKER_BIN" build --network host --progress plain \
  --secret "id=pip-ca,src=$ca" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "PIP_INDEX_URL=$index_url" \
  --build-arg "VERSION=$version" --build-arg "COMMIT=$commit" --build-arg "BUILD_TIME=$build_time" \
  -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
"$DOCKER_BIN" image prune -f >/dev/null  # earlier builds of $IMAGE, now untagged
"$DOCKER_BIN" builder prune -f --keep-storage 2gb >/dev/null  # vfs copies every layer in full
size=$("$DOCKER_BIN" image inspect -f '{{.Size}}' "$IMAGE")
log "built $IMAGE: $((size / 1000000)) MB"

# -- 4. run it like Kubernetes does, offline
log "run $IMAGE (--network none, read-only root, no capabilities)"
cid=$("$DOCKER_BIN" run -d --network none --read-only --tmpfs /tmp:size=64m \
  --cap-drop ALL --security-opt no-new-privileges \
  --mount type=volume,dst=/var/lib/zai-proxy \
  -e DEPLOYMENT_VARIANT=ci -e SHUTDOWN_DRAIN_SECONDS=3 -e SHUTDOWN_GRACE_SECONDS=10 \
  --health-interval 1s --health-timeout 3s --health-start-period 2s "$IMAGE")
# Requests run inside the container (it has no network), as its own user.
in_container() { "$DOCKER_BIN" exec "$cid" /opt/venv/bin/python -c "$1"; }
PYGET='
import json, sys, urllib.request, urllib.error
def get(path, data=None):
    req = urllib.request.Request("http://127.0.0.1:8080" + path, data=data,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
'
ok=""
for _ in $(seq 1 60); do
  if in_container "$PYGET
status, body = get('/health'); sys.exit(0 if status == 200 else 1)" 2>/dev/null; then ok=1; break; fi
  [ "$("$DOCKER_BIN" inspect -f '{{.State.Running}}' "$cid")" = true ] || break
  sleep 0.5
done
if [ -z "$ok" ]; then "$DOCKER_BIN" logs "$cid" >&2; echo "/health never answered" >&2; exit 1; fi

in_container "$PYGET
status, body = get('/health')
health = json.loads(body)
print('  /health:', body)
assert health['deployment_variant'] == 'ci' and health['status'] == 'ok', health
assert health['version'] == '$version', health
status, metrics = get('/metrics')
build = [l for l in metrics.splitlines() if l.startswith('zai_proxy_build_info{')]
print('  build info:', build)
assert build and 'version=\"$version\"' in build[0] and 'commit=\"$commit\"' in build[0], build
payload = json.dumps({'model': 'glm-4.6', 'messages': [{'role': 'user', 'content': 'hello'}]})
status, body = get('/v1/chat/completions', payload.encode())
print('  chat completion:', status, body[:160])
assert status == 200, body
import time
for _ in range(30):
    status, metrics = get('/metrics')
    tokens = [l for l in metrics.splitlines() if l.startswith('zai_proxy_tokens_total{')]
    if tokens:
        break
    time.sleep(0.1)
print('  tokens:', tokens)
assert tokens, 'no zai_proxy_tokens_total after a completion'
# The tiktoken encodings ship inside the package: they load here with no network at all.
import os, pathlib, tiktoken, zai_proxy
os.environ['TIKTOKEN_CACHE_DIR'] = str(pathlib.Path(zai_proxy.__file__).parent / '_encodings')
for name in ('cl100k_base', 'o200k_base'):
    assert len(tiktoken.get_encoding(name).encode('hello world')) == 2, name
print('  tiktoken cl100k_base and o200k_base load offline')
"

pid=$("$DOCKER_BIN" inspect -f '{{.State.Pid}}' "$cid")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
log "container PID 1 runs as uid $uid: $cmdline"
[ "$uid" = 1000 ] || { echo "the proxy runs as uid $uid, not 1000" >&2; exit 1; }
case "$cmdline" in *zai-proxy\ serve*) ;; *) echo "PID 1 is not zai-proxy serve (exec form?)" >&2; exit 1 ;; esac

health=""
for _ in $(seq 1 30); do
  health=$("$DOCKER_BIN" inspect -f '{{.State.Health.Status}}' "$cid")
  [ "$health" = healthy ] && break
  sleep 0.5
done
log "HEALTHCHECK: $health"
[ "$health" = healthy ] || { "$DOCKER_BIN" inspect -f '{{json .State.Health}}' "$cid" >&2; exit 1; }

log "SIGTERM: /ready must turn 503 while draining, then exit 0"
"$DOCKER_BIN" kill --signal TERM "$cid" >/dev/null
in_container "$PYGET
import time
deadline = time.monotonic() + 2
while True:
    status, body = get('/ready')
    if status == 503:
        print('  /ready while draining:', status, body)
        break
    assert time.monotonic() < deadline, ('/ready still', status)
    time.sleep(0.1)
status, body = get('/health')
assert status == 200 and json.loads(body)['status'] == 'draining', body
"
code=$(timeout 60 "$DOCKER_BIN" wait "$cid")
"$DOCKER_BIN" logs "$cid" 2>&1 | tail -3 | sed 's/^/  log: /'
log "exit code after SIGTERM: $code"
[ "$code" = 0 ] || { "$DOCKER_BIN" logs "$cid" >&2; exit 1; }
log "image OK: $IMAGE $((size / 1000000)) MB"
