package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"
)

const writeKey = "wk_test_123"

// callbacks records what analytics-go reports for each message.
type callbacks struct {
	mu        sync.Mutex
	succeeded int
	failed    []error
}

func (c *callbacks) Success(analytics.Message) { c.mu.Lock(); c.succeeded++; c.mu.Unlock() }
func (c *callbacks) Failure(_ analytics.Message, err error) {
	c.mu.Lock()
	c.failed = append(c.failed, err)
	c.mu.Unlock()
}

func TestAnalyticsGoSendsEveryCallTypeToTheSink(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"WRITE_KEYS": "other-key," + writeKey})
	conn := s.db(t)
	cb := &callbacks{}
	client, err := analytics.NewWithConfig(writeKey, analytics.Config{
		Endpoint:  s.url,
		Interval:  50 * time.Millisecond,
		BatchSize: 4, // so that the six calls travel in more than one batch
		Callback:  cb,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Client timestamps a minute in the past, with an offset, as a real client would send them.
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond).In(time.FixedZone("CEST", 2*3600))
	before := time.Now()
	msgs := []analytics.Message{
		analytics.Track{MessageId: "go-track", UserId: "user-1", Event: "Order Completed", Timestamp: at,
			Properties: analytics.NewProperties().SetRevenue(19.99).Set("currency", "EUR")},
		analytics.Identify{MessageId: "go-identify", UserId: "user-1", Timestamp: at,
			Traits: analytics.NewTraits().SetEmail("ada@example.com").SetName("Ada")},
		analytics.Page{MessageId: "go-page", AnonymousId: "anon-1", Name: "Pricing", Timestamp: at,
			Properties: analytics.NewProperties().SetPath("/pricing").SetURL("https://example.com/pricing")},
		analytics.Screen{MessageId: "go-screen", UserId: "user-1", Name: "Settings", Timestamp: at,
			Properties: analytics.NewProperties().Set("tab", "privacy")},
		analytics.Group{MessageId: "go-group", UserId: "user-1", GroupId: "acme", Timestamp: at,
			Traits: analytics.NewTraits().SetName("Acme Inc").Set("plan", "enterprise")},
		analytics.Alias{MessageId: "go-alias", PreviousId: "anon-1", UserId: "user-1", Timestamp: at},
	}
	for _, m := range msgs {
		if err := client.Enqueue(m); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	if err := client.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	after := time.Now()
	if cb.succeeded != len(msgs) || len(cb.failed) > 0 {
		t.Fatalf("analytics-go: %d succeeded, failures %v", cb.succeeded, cb.failed)
	}

	checks := []struct{ table, id, cond string }{
		{"tracks", "go-track", `user_id = 'user-1' AND event = 'Order Completed' AND (properties->>'revenue')::numeric = 19.99 AND properties->>'currency' = 'EUR'`},
		{"identifies", "go-identify", `user_id = 'user-1' AND traits->>'email' = 'ada@example.com' AND traits->>'name' = 'Ada'`},
		{"pages", "go-page", `anonymous_id = 'anon-1' AND user_id IS NULL AND name = 'Pricing' AND properties->>'path' = '/pricing'`},
		{"screens", "go-screen", `user_id = 'user-1' AND name = 'Settings' AND properties->>'tab' = 'privacy'`},
		{"groups", "go-group", `user_id = 'user-1' AND group_id = 'acme' AND traits->>'name' = 'Acme Inc' AND traits->>'plan' = 'enterprise'`},
		{"aliases", "go-alias", `user_id = 'user-1' AND previous_id = 'anon-1'`},
	}
	for _, c := range checks {
		q := fmt.Sprintf(`SELECT count(*) FROM %s WHERE message_id = $1 AND %s
			AND context->'library'->>'name' = 'analytics-go' AND extra IS NULL`, c.table, c.cond)
		if got := queryInt(t, conn, q, c.id); got != 1 {
			t.Errorf("%s %s: %d rows match %s", c.table, c.id, got, c.cond)
		}
		// The client's timestamp is kept as original_timestamp; received_at is the sink's clock;
		// timestamp is corrected by (received_at - sent_at), which here is under the test's run.
		var orig, sent, recv, ts time.Time
		err := conn.QueryRow(context.Background(), fmt.Sprintf(
			`SELECT original_timestamp, sent_at, received_at, "timestamp" FROM %s WHERE message_id = $1`, c.table), c.id).
			Scan(&orig, &sent, &recv, &ts)
		if err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
		if !orig.Equal(at) {
			t.Errorf("%s original_timestamp = %s, want %s", c.id, orig, at)
		}
		if recv.Before(before.Truncate(time.Microsecond)) || recv.After(after) {
			t.Errorf("%s received_at = %s, not the sink's clock during the test (%s .. %s)", c.id, recv, before, after)
		}
		// PostgreSQL keeps microseconds: the stored values may each be rounded by one.
		if want := recv.Add(-sent.Sub(orig)); ts.Sub(want).Abs() > time.Microsecond {
			t.Errorf("%s timestamp = %s, want received_at - (sent_at - original_timestamp) = %s", c.id, ts, want)
		}
	}
	if got := rowCount(t, conn); got != len(msgs) {
		t.Errorf("rows = %d, want %d", got, len(msgs))
	}
}

// postTracking sends a tracking API request with optional Basic auth and gzip.
func postTracking(t *testing.T, s *sink, path, key string, gz bool, body []byte) (int, map[string]any) {
	t.Helper()
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(key+":")))
	}
	if gz {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(body)
		w.Close()
		body = buf.Bytes()
		h.Set("Content-Encoding", "gzip")
	}
	return s.do(t, path, h, string(body))
}

func TestTrackingAPIIsOffWithoutKeys(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	status, body := postTracking(t, s, "/v1/track", "any", false, []byte(`{"userId":"u","event":"E"}`))
	if status != http.StatusNotFound || !strings.Contains(body["error"].(string), "WRITE_KEYS") {
		t.Errorf("tracking API without keys = %d %v, want 404 naming WRITE_KEYS", status, body)
	}
	open := startSink(t, map[string]string{"TRACKING_API_OPEN": "true"})
	if status, body := postTracking(t, open, "/v1/track", "", false, []byte(`{"userId":"u","event":"E"}`)); status != http.StatusOK {
		t.Errorf("tracking API opened on purpose = %d %v, want 200", status, body)
	}
}

func TestTrackingAPI(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"WRITE_KEYS": writeKey})
	conn := s.db(t)
	track := func(id string) string {
		return fmt.Sprintf(`{"type":"track","messageId":%q,"userId":"u","event":"E","timestamp":"2024-05-01T10:00:00Z"}`, id)
	}
	batch := func(events ...string) []byte {
		return []byte(`{"batch":[` + strings.Join(events, ",") + `],"context":{"library":{"name":"test"}},"sentAt":"2024-05-01T10:00:01Z"}`)
	}

	tests := []struct {
		name   string
		path   string
		key    string
		gzip   bool
		body   []byte
		status int
		want   string // in the answer
	}{
		{"no key", "/v1/track", "", false, []byte(track("k0")), 401, "missing write key"},
		{"wrong key", "/v1/track", "nope", false, []byte(track("k1")), 401, "unknown write key"},
		{"wrong key in the body", "/v1/batch", "", false, []byte(`{"writeKey":"nope","batch":[` + track("k2") + `]}`), 401, "unknown write key"},
		{"key in the body", "/v1/batch", "", false, []byte(`{"writeKey":"` + writeKey + `","batch":[` + track("body-key") + `]}`), 200, `"events":1`},
		{"single track, type from the path", "/v1/track", writeKey, false, []byte(`{"messageId":"single","userId":"u","event":"E"}`), 200, `"events":1`},
		{"single page", "/v1/page", writeKey, false, []byte(`{"messageId":"single-page","anonymousId":"a","name":"Home"}`), 200, `"events":1`},
		{"single with another type", "/v1/page", writeKey, false, []byte(track("k3")), 400, "must be page at this endpoint"},
		{"single invalid", "/v1/group", writeKey, false, []byte(`{"userId":"u"}`), 400, `"field":"groupId"`},
		{"gzipped batch", "/v1/batch", writeKey, true, batch(track("gz1"), track("gz2")), 200, `"events":2`},
		{"import is batch", "/v1/import", writeKey, false, batch(track("imp")), 200, `"events":1`},
		{"gzip header, plain body", "/v1/batch", writeKey, false, nil, 400, "gzip but the body is not"},
		{"unknown encoding", "/v1/batch", writeKey, false, nil, 400, "unsupported Content-Encoding"},
		{"mixed batch keeps the valid events", "/v1/batch", writeKey, false,
			batch(track("ok1"), `{"type":"track","userId":"u"}`, track("ok2"), `{"type":"identify"}`), 200,
			`"rejected":[{"error":"event: is required","field":"event","index":1},{"error":"userId: userId or anonymousId is required","field":"userId","index":3}]`},
		{"all invalid", "/v1/batch", writeKey, false, batch(`{"type":"track"}`), 400, "no valid event in the batch"},
		{"empty batch", "/v1/batch", writeKey, false, []byte(`{"batch":[]}`), 400, "no events"},
		{"not an envelope", "/v1/batch", writeKey, false, []byte(`[1,2]`), 400, "batch array"},
		{"batch not an array", "/v1/batch", writeKey, false, []byte(`{"batch":{"type":"track"}}`), 400, "batch array"},
		{"batch null", "/v1/batch", writeKey, false, []byte(`{"batch":null}`), 400, "no events"},
		{"envelope after the object", "/v1/batch", writeKey, false, []byte(`{"batch":[` + track("trail") + `]} x`), 400, "unexpected data after the object"},
		{"an event nested too deeply is rejected alone", "/v1/batch", writeKey, false,
			batch(track("deep-ok"), `{"type":"track","userId":"u","event":"E","properties":`+strings.Repeat(`{"a":`, 70)+`1`+strings.Repeat(`}`, 70)+`}`), 200,
			`"index":1`},
		{"envelope context not an object", "/v1/batch", writeKey, false, []byte(`{"batch":[` + track("c") + `],"context":"x"}`), 400, "context must be a JSON object"},
		{"event over 32 KB", "/v1/batch", writeKey, false,
			batch(track("fits"), `{"type":"track","userId":"u","event":"E","properties":{"p":"`+strings.Repeat("x", 33<<10)+`"}}`), 200, "at most 32768 are allowed"},
		{"single event over 32 KB", "/v1/track", writeKey, false, []byte(`{"userId":"u","event":"E","properties":{"p":"` + strings.Repeat("x", 33<<10) + `"}}`), 413, "too large"},
		{"body over 500 KB", "/v1/batch", writeKey, false, bigBatch(600 << 10), 413, "too large"},
		{"gzip bomb", "/v1/batch", writeKey, true, bigBatch(5 << 20), 413, "once inflated"},
		{"more than 2500 events", "/v1/batch", writeKey, false, manyEvents(2501), 400, "at most 2500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var status int
			var body map[string]any
			if tt.body == nil {
				// A Content-Encoding header that does not describe the body.
				enc := map[string]string{"gzip header, plain body": "gzip", "unknown encoding": "br"}[tt.name]
				h := http.Header{"Content-Encoding": {enc}}
				h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(writeKey+":")))
				status, body = s.do(t, tt.path, h, string(batch(track("enc"))))
			} else {
				status, body = postTracking(t, s, tt.path, tt.key, tt.gzip, tt.body)
			}
			raw, _ := json.Marshal(body)
			answer := string(raw)
			if status != tt.status || !strings.Contains(answer, tt.want) {
				t.Errorf("= %d %s, want %d containing %s", status, answer, tt.status, tt.want)
			}
		})
	}
	want := []string{"body-key", "single", "gz1", "gz2", "imp", "ok1", "ok2", "fits", "deep-ok"}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id = ANY($1)`, want); got != len(want) {
		t.Errorf("%d of the accepted tracks are stored, want %d", got, len(want))
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM pages WHERE message_id = 'single-page'`); got != 1 {
		t.Errorf("single page stored %d times", got)
	}
	if got := rowCount(t, conn); got != len(want)+1 {
		t.Errorf("rows = %d, want %d: refused requests must store nothing", got, len(want)+1)
	}
	// The envelope's context and sentAt reached the events.
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id = 'gz1' AND context->'library'->>'name' = 'test'
		AND sent_at = '2024-05-01T10:00:01Z' AND original_timestamp = '2024-05-01T10:00:00Z'`); got != 1 {
		t.Errorf("batch envelope not applied to gz1")
	}
}

func bigBatch(size int) []byte {
	pad := strings.Repeat("x", 1000)
	var parts []string
	for i := 0; len(parts)*1100 < size; i++ {
		parts = append(parts, fmt.Sprintf(`{"type":"track","messageId":"big%d","userId":"u","event":"E","properties":{"p":%q}}`, i, pad))
	}
	return []byte(`{"batch":[` + strings.Join(parts, ",") + `]}`)
}

func manyEvents(n int) []byte {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"type":"track","userId":"u","event":"E%d"}`, i)
	}
	return []byte(`{"batch":[` + strings.Join(parts, ",") + `]}`)
}
