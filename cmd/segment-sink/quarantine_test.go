package main

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

func TestRefusedRequestsAreQuarantinedAndReplayed(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"SHARED_SECRET": secret, "WRITE_KEYS": writeKey})
	conn := s.db(t)
	ctx := context.Background()
	env := map[string]string{"DATABASE_URL": s.dbURL, "SHARED_SECRET": secret, "WRITE_KEYS": writeKey}
	getenv := func(k string) string { return env[k] }

	// Text PostgreSQL cannot store, and a raw invalid UTF-8 byte: kept byte for byte.
	invalid := "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"properties\":{\"k\":\"a\\u0000b\",\"raw\":\"\xff\"}}"
	if status, _ := s.post(t, "/webhook", secret, invalid); status != http.StatusBadRequest {
		t.Fatalf("invalid event = %d", status)
	}
	// Unauthenticated junk is never kept.
	if status, _ := s.post(t, "/webhook", "wrong-secret", invalid); status != http.StatusUnauthorized {
		t.Fatalf("badly signed = %d", status)
	}
	// A valid event that a constraint of the user's refuses, to be fixed and replayed.
	if _, err := conn.Exec(ctx, `ALTER TABLE tracks ADD CONSTRAINT no_vip CHECK (user_id <> 'vip')`); err != nil {
		t.Fatal(err)
	}
	poison := trackEvent("vip-1", "vip")
	if status, _ := s.post(t, "/webhook", secret, poison); status != http.StatusBadRequest {
		t.Fatalf("refused by the constraint = %d", status)
	}
	// One bad event in a tracking batch: the good one is stored, the bad one kept on its own.
	auth := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(writeKey+":"))}}
	batch := `{"batch":[{"type":"track","messageId":"ok-1","userId":"u","event":"E"},{"type":"track","userId":"u"}],"context":{"ip":"10.1.1.1"}}`
	if status, body := s.do(t, "/v1/batch", auth, batch); status != http.StatusOK || body["events"] != 1.0 {
		t.Fatalf("mixed batch = %d %v", status, body)
	}

	type row struct {
		path, reason, field string
		status              int
		index               *int
		body                []byte
	}
	rows, err := conn.Query(ctx, `SELECT path, reason, coalesce(field, ''), status, event_index, body FROM rejected_events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var kept []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.path, &r.reason, &r.field, &r.status, &r.index, &r.body); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, r)
	}
	if len(kept) != 3 {
		t.Fatalf("kept %d rejected requests, want 3: %+v", len(kept), kept)
	}
	if r := kept[0]; r.path != "/webhook" || r.reason != "invalid" || r.field != "properties" || r.status != 400 || string(r.body) != invalid {
		t.Errorf("first kept = %+v, want the invalid event byte for byte", r)
	}
	if r := kept[1]; r.reason != "unstorable" || string(r.body) != poison {
		t.Errorf("second kept = %+v, want the refused event", r)
	}
	if r := kept[2]; r.path != "/v1/batch" || r.field != "event" || r.index == nil || *r.index != 1 ||
		!strings.Contains(string(r.body), `"batch":[{"type":"track","userId":"u"}]`) || !strings.Contains(string(r.body), `"context":{"ip":"10.1.1.1"}`) {
		t.Errorf("third kept = %+v (%s), want the bad batch item with its envelope", r, r.body)
	}

	var out lockedBuffer
	if err := run(ctx, []string{"rejected", "list"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/webhook", "unstorable", "properties", "/v1/batch"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("rejected list lacks %q:\n%s", want, out.String())
		}
	}

	// The fix, then the replay: the refused event now lands; the invalid ones stay refused.
	if _, err := conn.Exec(ctx, `ALTER TABLE tracks DROP CONSTRAINT no_vip`); err != nil {
		t.Fatal(err)
	}
	out = lockedBuffer{}
	err = run(ctx, []string{"rejected", "replay", "--url", s.url}, getenv, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "2 requests still refused") {
		t.Errorf("replay = %v, want 2 still refused\n%s", err, out.String())
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id = 'vip-1'`); got != 1 {
		t.Errorf("the replayed event is not stored")
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM rejected_events WHERE replayed_at IS NOT NULL AND reason = 'unstorable'`); got != 1 {
		t.Errorf("the replayed request is not marked replayed")
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM rejected_events WHERE replayed_at IS NULL`); got != 2 {
		t.Errorf("%d requests left to replay, want 2", got)
	}
}
