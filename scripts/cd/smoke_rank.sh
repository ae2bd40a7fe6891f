#!/usr/bin/env bash
# The deploy jobs' smoke test of a running ranker: ready, then one real ranked feed.
#
#   SMOKE_API_KEY=frk_... scripts/cd/smoke_rank.sh URL
#
# Waits for URL/readyz (SMOKE_RETRIES tries, 3 s apart; default 10), then POSTs
# /rank for user SMOKE_USER_ID (default 1) with the rank-scoped key. Exit status:
# 0 a feed that is not degraded and not empty, 1 anything else (not ready, a 4xx
# or 5xx, a degraded or empty feed), 2 usage. Tested by tests/integration/test_smoke_rank.py.
set -euo pipefail

if [[ $# -ne 1 || -z "${SMOKE_API_KEY:-}" ]]; then
  echo "usage: SMOKE_API_KEY=KEY $0 URL" >&2
  exit 2
fi
url="${1%/}"
if ! curl --fail --silent --show-error --retry "${SMOKE_RETRIES:-10}" --retry-delay 3 \
  --retry-all-errors --max-time 10 "$url/readyz" >/dev/null; then
  echo "smoke: $url/readyz never answered 200" >&2
  exit 1
fi
if ! answer="$(curl --fail-with-body --silent --show-error --max-time 10 \
  -H "Authorization: Bearer $SMOKE_API_KEY" -H 'Content-Type: application/json' \
  -d "{\"user_id\": ${SMOKE_USER_ID:-1}}" "$url/rank")"; then
  echo "smoke: POST $url/rank failed: ${answer:0:300}" >&2
  exit 1
fi
if ! jq -e '.degraded != true and (.items | length) > 0' <<<"$answer" >/dev/null; then
  echo "smoke: /rank answered a degraded or empty feed: ${answer:0:300}" >&2
  exit 1
fi
jq -r '"smoke: \(.items | length) items from \(.model_version) (request \(.request_id))"' <<<"$answer"
