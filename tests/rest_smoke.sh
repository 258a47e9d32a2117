#!/usr/bin/env bash
# Smoke test of parley's REST ingress against a running server, with curl only.
#
#   bash tests/rest_smoke.sh [BASE_URL]      (or PARLEY_URL=...; default http://127.0.0.1:8080)
#
# Exercises every /api endpoint: the sms, mms and email writes (outbound and inbound),
# a redelivered webhook, an unassigned inbound message (202), both pages with cursors,
# and the 400/404/413/415 answers. Provider ids are unique per run, so it can run again
# against the same database. The 413 check sends SMOKE_BIG_BYTES (default 3 MiB, over the
# default 2 MiB PARLEY_MAX_REQUEST_BYTES). Exits non-zero when any answer has an unexpected status or
# body.
set -u

BASE="${1:-${PARLEY_URL:-http://127.0.0.1:8080}}"
BASE="${BASE%/}"
RUN="smoke-$(date +%s)-$$"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FAILED=0
BODY=""

# call METHOD PATH EXPECTED_STATUS [JSON_BODY] [CONTENT_TYPE]
call() {
    local method="$1" path="$2" expected="$3" data="${4-}" ctype="${5:-application/json}"
    local args=(-sS -o "$TMP/body" -w '%{http_code}' -X "$method" --max-time 30)
    if [ -n "$data" ]; then
        # --data-binary sends the text as is; "@FILE" sends a file.
        args+=(-H "content-type: $ctype" --data-binary "$data")
    fi
    local status
    status="$(curl "${args[@]}" "$BASE$path")" || status="curl-error"
    BODY="$(cat "$TMP/body" 2>/dev/null || true)"
    if [ "$status" = "$expected" ]; then
        printf 'ok    %-6s %-52s %s\n' "$method" "$path" "$status"
    else
        printf 'FAIL  %-6s %-52s got %s, expected %s\n      %s\n' \
            "$method" "$path" "$status" "$expected" "${BODY:0:300}"
        FAILED=$((FAILED + 1))
    fi
}

# expect TEXT: the last answer's body contains TEXT.
expect() {
    case "$BODY" in
        *"$1"*) ;;
        *)
            printf 'FAIL  body lacks %s\n      %s\n' "$1" "${BODY:0:300}"
            FAILED=$((FAILED + 1))
            ;;
    esac
}

# field NAME: a string field of the last answer's (compact JSON) body.
field() {
    printf '%s' "$BODY" | sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"
}

# same A B WHAT: A and B are equal and not empty.
same() {
    if [ -z "$1" ] || [ "$1" != "$2" ]; then
        printf 'FAIL  %s: %s != %s\n' "$3" "$1" "$2"
        FAILED=$((FAILED + 1))
    fi
}

echo "parley REST smoke test against $BASE (run $RUN)"
if ! curl -sS -o /dev/null --max-time 5 "$BASE/healthz"; then
    echo "FAIL  no parley server answers at $BASE"
    exit 1
fi

# SMS out, reply in, redelivery.
call POST /api/messages/sms 200 '{"from":"+12016661234","to":"+18045551234","type":"sms","body":"Are you coming?","attachments":null,"timestamp":"2024-11-01T14:00:00Z"}'
expect '"duplicate":false'
SMS_CONV="$(field conversation_id)"
call POST /api/webhooks/sms 200 "{\"from\":\"(804) 555-1234\",\"to\":[\"+1 201 666 1234\"],\"type\":\"sms\",\"body\":\"Yes!\",\"attachments\":[],\"timestamp\":\"2024-11-01T14:03:00Z\",\"messaging_provider_id\":\"$RUN-sms\"}"
same "$(field conversation_id)" "$SMS_CONV" "the reply joins the outbound conversation"
REPLY_ID="$(field message_id)"
call POST /api/webhooks/sms 200 "{\"from\":\"+18045551234\",\"to\":\"+12016661234\",\"type\":\"sms\",\"body\":\"Yes!\",\"attachments\":[],\"timestamp\":\"2024-11-01T14:03:00Z\",\"messaging_provider_id\":\"$RUN-sms\"}"
expect '"duplicate":true'
same "$(field message_id)" "$REPLY_ID" "a redelivered webhook answers the original message"

# MMS on the same conversation.
call POST /api/messages/sms 200 '{"from":"+12016661234","to":["+18045551234"],"type":"mms","body":"look","attachments":["https://files.example.com/a.png"],"timestamp":"2024-11-01T14:05:00Z"}'
same "$(field conversation_id)" "$SMS_CONV" "MMS and SMS between the same numbers share a conversation"

# Email out, reply in.
call POST /api/messages/email 200 '{"from":"user@usehatchapp.com","to":"contact@gmail.com","body":"<html><body>Hello <b>there</b></body></html>","attachments":["https://files.example.com/invite.ics"],"timestamp":"2024-11-01T14:00:00Z"}'
MAIL_CONV="$(field conversation_id)"
call POST /api/webhooks/email 200 "{\"from\":\"Contact <contact@gmail.com>\",\"to\":[\"user@usehatchapp.com\"],\"body\":\"<p>Thanks!</p>\",\"attachments\":[],\"timestamp\":\"2024-11-01T14:10:00Z\",\"xillio_id\":\"$RUN-mail\"}"
same "$(field conversation_id)" "$MAIL_CONV" "the email reply joins the outbound conversation"

# An inbound message whose sender does not normalize is stored unassigned: 202.
call POST /api/webhooks/sms 202 "{\"from\":\"+1 555 0100 99999\",\"to\":\"+12016661234\",\"type\":\"sms\",\"body\":\"odd\",\"attachments\":null,\"timestamp\":\"2024-11-01T14:00:00Z\",\"messaging_provider_id\":\"$RUN-odd\"}"
expect '"conversation_id":null'
expect '"assignment_error":"from:'

# Pages.
call GET '/api/conversations?first=1' 200
expect '"page_info":'
CURSOR="$(field end_cursor)"
call GET "/api/conversations?first=1&after=$CURSOR" 200
expect '"has_previous_page":true'
call GET "/api/conversations?last=1&before=$CURSOR" 200
call GET "/api/conversations/$SMS_CONV/messages?last=10" 200
expect "\"id\":\"$REPLY_ID\""
call GET "/api/conversations/$MAIL_CONV/messages" 200
expect '"kind":"EMAIL"'

# Errors.
call POST /api/messages/sms 400 '{"from":"+1 555 0100 99999","to":"+18045551234","type":"sms","body":"x","attachments":null,"timestamp":null}'
expect '"code":"BAD_USER_INPUT"'
expect '"field":"from"'
call POST /api/messages/sms 400 '{"from":"+12016661234","to":"+18045551234","type":"fax","body":"x"}'
expect '"field":"type"'
call POST /api/messages/email 400 '{"from":"user@usehatchapp.com","to":"contact@gmail.com","attachments":[]}'
expect '"field":"body"'
call POST /api/webhooks/sms 400 '{"from": '
expect '"code":"BAD_USER_INPUT"'
call GET '/api/conversations?after=bm90LWEtY3Vyc29y' 400
expect '"code":"INVALID_CURSOR"'
call POST /api/messages/sms 415 'from=+12016661234' 'application/x-www-form-urlencoded'
expect '"code":"UNSUPPORTED_MEDIA_TYPE"'
call GET /api/conversations/Q29udmVyc2F0aW9uOjk5OTk5OTk5OQ/messages 404
expect '"code":"NOT_FOUND"'
head -c "${SMOKE_BIG_BYTES:-3145728}" /dev/zero | tr '\0' 'x' >"$TMP/big"
call POST /api/webhooks/email 413 "@$TMP/big"

echo
if [ "$FAILED" -ne 0 ]; then
    echo "$FAILED check(s) FAILED"
    exit 1
fi
echo "all REST checks passed"
