#!/usr/bin/env bash
# Checks the deployment files without a cluster or a Docker engine: validates
# k8s/*.yaml against the Kubernetes API's schemas (kubernetes-validate, pinned,
# installed once into .local/deploy-venv from PyPI), then runs test_deploy.py's
# cross-checks against the built service binaries.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.local/deploy-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
echo "== kubernetes-validate --strict k8s/*.yaml"
"$venv/bin/kubernetes-validate" --strict --quiet "$root"/k8s/*.yaml
echo "ok: every manifest matches the Kubernetes 1.37 schemas"
cd "$root/tests/deploy"
# Not on a terminal (CI, a log file), pytest cuts each line of its summary
# at 80 columns, which drops the error after a long test name.
[ -t 1 ] || export COLUMNS="${COLUMNS:-250}"
exec python3 -m pytest -v -rA "$@" .
