#!/usr/bin/env bash
# cd.yml's push step: containerize a Bento and push it by the commit's SHA.
#
#   scripts/cd/publish_image.sh BENTO_TAG REPOSITORY
#
# Builds REPOSITORY:$GITHUB_SHA with `bentoml containerize` (Docker BuildKit),
# pushes it, and on a tag push ($GITHUB_REF_TYPE=tag) also REPOSITORY:$GITHUB_REF_NAME.
# Writes repository= and digest= (sha256:...) to $GITHUB_OUTPUT; the deploy jobs
# pull by that digest. Exit status: 0 pushed, 1 a build or push failed or the
# registry gave no digest, 2 usage. Tested by tests/integration/test_cd_build.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/.venv/bin"

if [[ $# -ne 2 || -z "${GITHUB_SHA:-}" ]]; then
  echo "usage: GITHUB_SHA=SHA $0 BENTO_TAG REPOSITORY" >&2
  exit 2
fi
bento_tag="$1"
repository="${2,,}" # registries want lower case; GitHub owners may not be
image="$repository:$GITHUB_SHA"

"$BIN/bentoml" containerize "$bento_tag" --image-tag "$image"
docker push "$image"
if [[ "${GITHUB_REF_TYPE:-}" == tag ]]; then
  docker tag "$image" "$repository:$GITHUB_REF_NAME"
  docker push "$repository:$GITHUB_REF_NAME"
fi
digest="$(docker inspect --format '{{index .RepoDigests 0}}' "$image")"
digest="${digest##*@}"
if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "::error::no digest for $image (docker inspect gave '$digest')" >&2
  exit 1
fi
printf 'repository=%s\ndigest=%s\n' "$repository" "$digest" >>"${GITHUB_OUTPUT:-/dev/null}"
echo "Pushed $image ($digest)" | tee -a "${GITHUB_STEP_SUMMARY:-/dev/null}"
