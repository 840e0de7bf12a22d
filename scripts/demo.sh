#!/usr/bin/env bash
# Publishes the example SSE streaming Lambda image to a local default stack, the way the
# action does on GitHub, and prints the action's outputs:
#   - a CNCF registry on 127.0.0.1:5000 that accepts the ECR login moto hands out,
#   - moto's AWS API on 127.0.0.1:5001 (ECR), holding the repository Terraform would create,
#   - local base images standing in for the public Python and Lambda Web Adapter images,
#     which cannot be pulled here.
# Everything is installed and started on first use. Before pushing, the image is checked
# against Lambda's rules and booted (/health must answer). Rerunning with unchanged sources
# skips the build and points the new commit's tags at the image already published. `scripts/demo.sh down` stops the registry and moto.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEMO="$ROOT/.stack/demo"
REGISTRY_PORT=5000
MOTO_PORT=5001
ENV_NAME="${DEMO_ENV:-preprod}"

stop() {
  for name in registry moto; do
    if [ -f "$DEMO/$name.pid" ]; then
      kill "$(cat "$DEMO/$name.pid")" 2>/dev/null || true
      rm -f "$DEMO/$name.pid"
    fi
  done
}
if [ "${1:-}" = "down" ]; then stop; echo "demo stack stopped"; exit 0; fi

bash scripts/stack.sh up
# shellcheck source=/dev/null
. .stack/env.sh
mkdir -p "$DEMO"

running() { [ -f "$DEMO/$1.pid" ] && kill -0 "$(cat "$DEMO/$1.pid")" 2>/dev/null; }
wait_http() {
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "demo: $1 did not answer; see $DEMO/*.log" >&2
  exit 1
}

if ! running registry; then
  htpasswd -Bbn AWS 123456789012-auth-token > "$DEMO/htpasswd"
  cat > "$DEMO/registry.yml" <<YAML
version: 0.1
storage:
  filesystem: {rootdirectory: $DEMO/registry-data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
auth:
  htpasswd: {realm: basic-realm, path: $DEMO/htpasswd}
YAML
  nohup docker-registry serve "$DEMO/registry.yml" > "$DEMO/registry.log" 2>&1 &
  echo $! > "$DEMO/registry.pid"
fi
if ! running moto; then
  nohup moto_server -H 127.0.0.1 -p "$MOTO_PORT" > "$DEMO/moto.log" 2>&1 &
  echo $! > "$DEMO/moto.pid"
fi
wait_http "http://127.0.0.1:$REGISTRY_PORT/v2/"
wait_http "http://127.0.0.1:$MOTO_PORT/moto-api/"

export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export AWS_DEFAULT_REGION=eu-west-2 AWS_EC2_METADATA_DISABLED=true

# What `terraform apply -target=aws_ecr_repository.this` does on AWS, and the local stand-ins
# for the public base images.
read -r BASE ADAPTER < <(python - "$ENV_NAME" <<'PY'
import sys

import boto3
import docker

from tests.support.stack import ensure_adapter_standin, ensure_python_base

ecr = boto3.client("ecr")
name = f"{sys.argv[1]}-sse-streaming-lambda"
try:
    ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True})
except ecr.exceptions.RepositoryAlreadyExistsException:
    pass
client = docker.from_env(timeout=600)
print(ensure_python_base(client), ensure_adapter_standin(client))
PY
)

python -m entrypoint publish \
  --env "$ENV_NAME" \
  --region eu-west-2 \
  --dockerfile examples/sse-streaming-lambda/Dockerfile \
  --registry "127.0.0.1:$REGISTRY_PORT" \
  --smoke 8080/health \
  --invoke-mode response-stream \
  --build-args "BASE_IMAGE=$BASE
ADAPTER_IMAGE=$ADAPTER"
