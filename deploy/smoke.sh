#!/usr/bin/env bash
# After `docker compose up -d`: check that events flow end to end, from each upstream through
# its beat and the gateway (SSE) and into Kafka. Exits non-zero with the reason on failure.
#   deploy/smoke.sh [gateway-url] [kafka-container]
set -euo pipefail
GATEWAY=${1:-http://localhost:8080}
KAFKA=${2:-kafka}
TOKEN_HEADER=()
[ -n "${BEATS_TOKEN:-}" ] && TOKEN_HEADER=(-H "Authorization: Bearer ${BEATS_TOKEN}")

fail() { echo "SMOKE FAIL: $*" >&2; exit 1; }

echo "waiting for the gateway at ${GATEWAY} ..."
for _ in $(seq 1 60); do
    curl -fsS "${GATEWAY}/readyz" >/dev/null 2>&1 && break
    sleep 2
done
curl -fsS "${GATEWAY}/readyz" >/dev/null || fail "gateway not ready"

for beat in hivemq fiware opencti ditto; do
    events=$(timeout 60 curl -sN "${TOKEN_HEADER[@]}" "${GATEWAY}/streams/${beat}?last_event_id=0" \
        | grep -m 3 '^data: ' || true)
    count=$(printf '%s\n' "${events}" | grep -c "\"beat\":\"${beat}\"" || true)
    [ "${count}" -ge 3 ] || fail "no events from the ${beat} beat through the gateway"
    echo "ok: ${beat} → gateway (${count} events)"
done

for topic in beats.hivemq.messages beats.fiware.entities beats.opencti.indicators beats.ditto.twin; do
    got=$(docker compose exec -T "${KAFKA}" /opt/kafka/bin/kafka-console-consumer.sh \
        --bootstrap-server localhost:9092 --topic "${topic}" --from-beginning \
        --max-messages 1 --timeout-ms 60000 2>/dev/null || true)
    [ -n "${got}" ] || fail "nothing in Kafka topic ${topic}"
    echo "ok: Kafka ${topic}"
done
echo "SMOKE OK"
