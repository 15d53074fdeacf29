#!/usr/bin/env bash
# Checks deploy/ without a container engine or a cluster (.ci/run calls it):
#   1. docker-compose accepts compose.yaml under every profile, with deploy/.env.example, and
#      refuses it without an env file, naming the missing secret;
#   2. promtool accepts the Prometheus configuration exactly as compose mounts it (the files
#      named by the prometheus service's volumes, laid out as in the container);
#   3. kubectl kustomize renders both overlays, and kubernetes-validate accepts every built-in
#      resource of each, strictly; the operators' custom resources are skipped by kind;
#   4. systemd-analyze verify accepts the unit (its binary path pointed at a real executable,
#      since none is installed here), and its exposure score is printed.
# The compose file's cfa-server services themselves are started natively by the behaviour
# test `deploy::` (cfa-server/tests/behaviour/deploy.rs).
#
# Usage: deploy/check.sh [PATH-TO-cfa-server]   (default: target/debug/cfa-server, else
# /bin/true for the unit check only). Needs docker-compose, promtool, kubectl (with kustomize
# v5), kubernetes-validate, systemd-analyze and python3 with PyYAML.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "FATAL: $*" >&2; exit 1; }
step() { printf '\n-- %s\n' "$*"; }
for tool in docker-compose promtool kubectl kubernetes-validate systemd-analyze python3; do
  command -v "$tool" > /dev/null || fail "$tool is not installed (.ci/run installs it)"
done
python3 -c 'import yaml' 2> /dev/null || fail "python3 has no PyYAML (kubernetes-validate brings it)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

compose() { docker-compose --env-file deploy/.env.example -f deploy/compose.yaml "$@"; }

step "docker-compose config, every profile"
for profiles in "" "all-in-one" "split" "observability" "all-in-one observability" "split observability"; do
  args=()
  for p in $profiles; do args+=(--profile "$p"); done
  compose "${args[@]}" config -q || fail "docker-compose rejects compose.yaml with profiles [${profiles}]"
  echo "ok: profiles [${profiles:-none given: COMPOSE_PROFILES from the env file}]"
done
# No secret has a default: without an env file compose must stop and name what is missing.
touch "$work/empty.env"
if out=$(docker-compose -f deploy/compose.yaml --env-file "$work/empty.env" config -q 2>&1); then
  fail "compose.yaml resolves with no env file: a secret has a default"
fi
grep -q 'set it in deploy/.env' <<< "$out" || fail "without an env file compose said: $out"
echo "ok: without an env file compose stops: $(head -n1 <<< "$out")"

step "promtool: the Prometheus configuration as compose mounts it"
compose config > "$work/compose.resolved.yaml"
python3 - "$work/compose.resolved.yaml" "$work/prometheus-root" <<'EOF'
import os, shutil, sys, yaml
config, root = sys.argv[1], sys.argv[2]
service = yaml.safe_load(open(config))["services"]["prometheus"]
command = service.get("command", [])
config_file = next(a.split("=", 1)[1] for a in command if a.startswith("--config.file="))
mounted = 0
for volume in service.get("volumes", []):
    if isinstance(volume, dict):
        source, target, kind = volume.get("source"), volume["target"], volume.get("type")
    else:
        parts = volume.split(":")
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith(("/", ".")) else "volume"
    if kind != "bind":
        continue
    if not os.path.exists(source):
        sys.exit(f"the prometheus service mounts {source}, which does not exist")
    destination = os.path.join(root, target.lstrip("/"))
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copy(source, destination)
    mounted += 1
if mounted == 0:
    sys.exit("the prometheus service mounts no file")
print(os.path.join(root, config_file.lstrip("/")))
EOF
prometheus_config=$(find "$work/prometheus-root" -name prometheus.yml | head -n1)
[ -n "$prometheus_config" ] || fail "no prometheus.yml among the prometheus service's mounts"
promtool check config "$prometheus_config" || fail "promtool rejects the compose Prometheus configuration"

step "kubectl kustomize + kubernetes-validate"
version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
[ "${version:-0}" -ge 5 ] || fail "kubectl's kustomize is v${version:-?}; deploy/k8s needs v5 (kubectl 1.27 or later)"
# Custom resources of the operators the manifests rely on: no built-in schema to check them
# against, so they are skipped by kind, and any other kind without a schema fails.
skip='postgresql.cnpg.io/v1/Cluster rabbitmq.com/v1beta1/RabbitmqCluster rabbitmq.com/v1beta1/Policy monitoring.coreos.com/v1/ServiceMonitor'
for overlay in all-in-one split; do
  kubectl kustomize "deploy/k8s/overlays/$overlay" > "$work/$overlay.yaml" \
    || fail "kubectl kustomize cannot render deploy/k8s/overlays/$overlay"
  mkdir -p "$work/$overlay"
  python3 - "$work/$overlay.yaml" "$work/$overlay" "$skip" <<'EOF'
import os, sys, yaml
rendered, out, skip = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
count = 0
for i, doc in enumerate(yaml.safe_load_all(open(rendered))):
    if not doc:
        continue
    key = f"{doc['apiVersion']}/{doc['kind']}"
    if key in skip:
        print(f"skipped (custom resource, no built-in schema): {doc['kind']} {doc['metadata']['name']}")
        continue
    with open(os.path.join(out, f"{i:03d}-{doc['kind']}-{doc['metadata']['name']}.yaml"), "w") as f:
        yaml.safe_dump(doc, f)
    count += 1
print(f"{count} built-in resources to validate")
EOF
  for k8s in 1.30.0 1.37.0; do
    out=$(kubernetes-validate --strict --quiet -k "$k8s" "$work/$overlay"/*.yaml 2>&1) \
      || fail "kubernetes-validate (Kubernetes $k8s) rejects a resource of the $overlay overlay:
$out"
    # It only warns about a kind it has no schema for; here that is a failure.
    if [ -n "$out" ]; then
      fail "kubernetes-validate (Kubernetes $k8s) could not check the $overlay overlay:
$out"
    fi
  done
  echo "ok: $overlay renders and validates against Kubernetes 1.30 and 1.37"
done

step "systemd-analyze verify"
bin=${1:-}
if [ -z "$bin" ]; then
  bin="${CARGO_TARGET_DIR:-target}/debug/cfa-server"
  [ -x "$bin" ] || bin=/bin/true
fi
bin=$(realpath "$bin")
mkdir -p "$work/systemd"
sed "s|/usr/local/bin/cfa-server|$bin|" deploy/systemd/cfa-server.service > "$work/systemd/cfa-server.service"
systemd-analyze verify "$work/systemd/cfa-server.service" || fail "systemd-analyze rejects deploy/systemd/cfa-server.service"
echo "ok: the unit verifies (ExecStart pointed at $bin)"
systemd-analyze security --offline=yes "$work/systemd/cfa-server.service" | tail -n1

echo
echo "deploy/check.sh: every check passed"
