#!/usr/bin/env bash
# Kubernetes manifests check, offline (docs/deployment.md, "Kubernetes"):
#   1. deploy/kubernetes rendered as `kubectl apply -k deploy/kubernetes` renders it
#      (`kubectl kustomize`: the generated ConfigMaps, the namespace, the image);
#   2. every object against the schemas of Kubernetes $KUBERNETES_VERSION that kubernetes-validate
#      ships, strict: an unknown field is an error, as with `kubectl apply --validate=strict`;
#   3. KEDA's objects against deploy/kubernetes/schemas/keda.sh/ (where they come from: the
#      README there). A kind with no schema fails.
# Without kubectl on the machine, step 1 is skipped and the kustomization's own files are
# checked instead (the generated ConfigMaps then go unchecked); it says so.
# The cross-references no schema sees (labels, probes, env names, security contexts) are
# tests/unit/test_kubernetes_manifests.py, in the suite. Prints PASS or FAIL last.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are checked against (kubernetes-validate ships 1.32 on).
KUBERNETES_VERSION=1.33.0
BIN=${VENV:-.venv}/bin
DIR=deploy/kubernetes
started=$SECONDS
work=$(mktemp -d)
rendered=$work/kustomize-build.yaml
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL kubernetes: $*"; exit 1; }

if [ ! -x "$BIN/kubernetes-validate" ]; then
  make --no-print-directory "${VENV:-.venv}/.dev" >/dev/null
fi

if command -v kubectl >/dev/null 2>&1; then
  echo "kubernetes: rendering $DIR with $(kubectl version --client 2>/dev/null | grep -i kustomize || echo kubectl kustomize)"
  kubectl kustomize "$DIR" >"$rendered" || fail "kubectl kustomize $DIR failed (see above)"
  files=("$rendered")
else
  echo "kubernetes: no kubectl here: checking the kustomization's files as they are, not rendered"
  mapfile -t files < <("$BIN/python" -c '
import sys, yaml
for name in yaml.safe_load(open(sys.argv[1] + "/kustomization.yaml"))["resources"]:
    if name.endswith(".yaml"):
        print(sys.argv[1] + "/" + name)' "$DIR")
fi

"$BIN/python" .ci/check_kubernetes.py "$KUBERNETES_VERSION" "${files[@]}" ||
  fail "an object does not match its schema (Kubernetes $KUBERNETES_VERSION, strict; lines FAIL above)"
echo "PASS kubernetes: every object valid against Kubernetes $KUBERNETES_VERSION (strict) and KEDA's schema ($((SECONDS - started)) s)"
