package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segment-sink/segment-sink/internal/httpapi"
)

const secret = "test-secret"

func TestEverySignedTypeLandsExactlyOnce(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"SHARED_SECRET": secret})
	conn := s.db(t)
	ctx := context.Background()

	events := []struct {
		body  string
		check string // must count exactly one row
	}{
		{trackEvent("t1", "u1"), `SELECT count(*) FROM tracks WHERE message_id = 't1' AND user_id = 'u1' AND event = 'Order Completed'
			AND properties->>'currency' = 'EUR' AND context->>'ip' = '203.0.113.9'
			AND "timestamp" = '2024-05-01T10:00:00Z' AND received_at = '2024-05-01T10:00:01Z' AND sent_at = '2024-05-01T10:00:00.5Z'`},
		{`{"type":"identify","messageId":"i1","anonymousId":"a1","traits":{"email":"ada@example.com"},"channel":"browser"}`,
			`SELECT count(*) FROM identifies WHERE message_id = 'i1' AND anonymous_id = 'a1' AND user_id IS NULL
			AND traits->>'email' = 'ada@example.com' AND extra = '{"channel":"browser"}'`},
		{`{"type":"page","messageId":"p1","userId":"u1","name":"Pricing","category":"Marketing","properties":{"path":"/pricing"}}`,
			`SELECT count(*) FROM pages WHERE message_id = 'p1' AND name = 'Pricing' AND category = 'Marketing' AND properties->>'path' = '/pricing'`},
		{`{"type":"screen","messageId":"s1","userId":"u1","name":"Home","properties":{"tab":"feed"}}`,
			`SELECT count(*) FROM screens WHERE message_id = 's1' AND name = 'Home' AND category IS NULL AND properties->>'tab' = 'feed'`},
		{`{"type":"group","messageId":"g1","userId":"u1","groupId":"acme","traits":{"name":"Acme","employees":120}}`,
			`SELECT count(*) FROM groups WHERE message_id = 'g1' AND group_id = 'acme' AND (traits->>'employees')::int = 120`},
		{`{"type":"alias","messageId":"al1","userId":"u1","previousId":"a1"}`,
			`SELECT count(*) FROM aliases WHERE message_id = 'al1' AND user_id = 'u1' AND previous_id = 'a1'`},
	}
	for _, e := range events {
		status, body := s.post(t, "/webhook", secret, e.body)
		if status != http.StatusOK || body["status"] != "ok" || body["events"] != 1.0 {
			t.Fatalf("POST %s = %d %v, want 200 ok", e.body, status, body)
		}
		// Acknowledged means committed: the row is there the moment the answer arrives.
		if got := queryInt(t, conn, e.check); got != 1 {
			t.Errorf("%s = %d, want 1", e.check, got)
		}
	}

	// Redeliveries, one after another.
	for _, e := range events {
		if status, body := s.post(t, "/webhook", secret, e.body); status != http.StatusOK {
			t.Fatalf("redelivery = %d %v", status, body)
		}
	}
	// Redeliveries, all at once.
	var wg sync.WaitGroup
	for range 8 {
		for _, e := range events {
			wg.Go(func() {
				if status, body := s.post(t, "/webhook", secret, e.body); status != http.StatusOK {
					t.Errorf("concurrent redelivery = %d %v", status, body)
				}
			})
		}
	}
	wg.Wait()
	// Redeliveries inside one array, twice over (Webhooks (Actions) batching).
	parts := make([]string, 0, 2*len(events))
	for _, e := range events {
		parts = append(parts, e.body, e.body)
	}
	// Signed over the first element only, as Segment signs arrays.
	array := "[" + strings.Join(parts, ",") + "]"
	header := http.Header{"X-Signature": {signFirst(t, array)}}
	if status, body := s.do(t, "/webhook", header, array); status != http.StatusOK || body["events"] != float64(len(parts)) {
		t.Fatalf("array signed over its first element = %d %v", status, body)
	}

	for _, e := range events {
		if got := queryInt(t, conn, e.check); got != 1 {
			t.Errorf("after redeliveries %s = %d, want 1", e.check, got)
		}
	}
	if got := rowCount(t, conn); got != len(events) {
		t.Errorf("rows = %d, want %d", got, len(events))
	}
	var rewritten int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tracks WHERE loaded_at > (SELECT min(loaded_at) FROM identifies)`).Scan(&rewritten); err != nil {
		t.Fatal(err)
	}
	if rewritten != 0 {
		t.Errorf("identical redeliveries rewrote %d track rows", rewritten)
	}
}

// signFirst signs the first element of a JSON array body, byte for byte.
func signFirst(t *testing.T, array string) string {
	t.Helper()
	depth, inString, escaped := 0, false, false
	for i := 1; i < len(array); i++ {
		c := array[i]
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{':
			depth++
		case c == '}':
			depth--
			if depth == 0 {
				return signWith(secret, array[1:i+1])
			}
		}
	}
	t.Fatal("no first element")
	return ""
}

func TestSignatureRequired(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"SHARED_SECRET": "old-secret, " + secret})
	conn := s.db(t)
	body := trackEvent("sig1", "u1")
	array := "[" + body + "," + trackEvent("sig2", "u1") + "]"

	tests := []struct {
		name      string
		signature string
		body      string
		want      int
	}{
		{"missing", "", body, http.StatusUnauthorized},
		{"signed with another secret", signWith("wrong", body), body, http.StatusUnauthorized},
		{"signed over other bytes", signWith(secret, body+" "), body, http.StatusUnauthorized},
		{"not hex", "zz", body, http.StatusUnauthorized},
		{"SHA-256 length", strings.Repeat("ab", 32), body, http.StatusUnauthorized},
		{"array signed over the whole body", signWith(secret, array), array, http.StatusUnauthorized},
		{"array unsigned", "", array, http.StatusUnauthorized},
		{"a rotated-out secret still in the list", signWith("old-secret", body), body, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{}
			if tt.signature != "" {
				header.Set("X-Signature", tt.signature)
			}
			status, answer := s.do(t, "/webhook", header, tt.body)
			if status != tt.want {
				t.Fatalf("status = %d %v, want %d", status, answer, tt.want)
			}
			if status == http.StatusUnauthorized && !strings.Contains(answer["error"].(string), "X-Signature") {
				t.Errorf("error %q does not name X-Signature", answer["error"])
			}
		})
	}
	// Only the one correctly signed request is stored.
	if got := rowCount(t, conn); got != 1 {
		t.Errorf("rows = %d, want 1", got)
	}
}

func TestInvalidEventsAreRefusedByField(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	conn := s.db(t)
	good := trackEvent("good", "u1")
	tests := []struct {
		name   string
		body   string
		status int
		field  string
		index  float64 // -1: no index expected
		reason string
	}{
		{"no type", `{"userId":"u"}`, 400, "type", -1, "is required"},
		{"unknown type", `{"type":"click","userId":"u"}`, 400, "type", -1, "must be one of"},
		{"track without event", `{"type":"track","userId":"u"}`, 400, "event", -1, "is required"},
		{"group without groupId", `{"type":"group","userId":"u"}`, 400, "groupId", -1, "is required"},
		{"alias without previousId", `{"type":"alias","userId":"u"}`, 400, "previousId", -1, "is required"},
		{"alias without userId", `{"type":"alias","anonymousId":"a","previousId":"p"}`, 400, "userId", -1, "is required"},
		{"neither userId nor anonymousId", `{"type":"page","name":"Home"}`, 400, "userId", -1, "userId or anonymousId"},
		{"userId not a string", `{"type":"identify","userId":7}`, 400, "userId", -1, "must be a string"},
		{"context not an object", `{"type":"identify","userId":"u","context":"x"}`, 400, "context", -1, "must be a JSON object"},
		{"properties not an object", `{"type":"track","userId":"u","event":"e","properties":[1]}`, 400, "properties", -1, "must be a JSON object"},
		{"traits not an object", `{"type":"identify","userId":"u","traits":1}`, 400, "traits", -1, "must be a JSON object"},
		{"integrations not an object", `{"type":"identify","userId":"u","integrations":true}`, 400, "integrations", -1, "must be a JSON object"},
		{"bad timestamp", `{"type":"identify","userId":"u","timestamp":"2024-13-45T00:00:00Z"}`, 400, "timestamp", -1, "ISO 8601"},
		{"bad sentAt", `{"type":"identify","userId":"u","sentAt":"soon"}`, 400, "sentAt", -1, "ISO 8601"},
		{"NUL in a property", `{"type":"track","userId":"u","event":"e","properties":{"k":"a\u0000b"}}`, 400, "properties", -1, `\u0000`},
		{"invalid JSON", `{"type":"track",`, 400, "", -1, "invalid JSON"},
		{"a JSON string", `"track"`, 400, "", -1, "must be a JSON object"},
		{"empty body", ``, 400, "", -1, "must be a JSON object"},
		{"empty array", `[]`, 400, "", -1, "no events"},
		{"third of an array invalid", "[" + good + "," + trackEvent("good2", "u") + `,{"type":"track","userId":"u"}]`, 400, "event", 2, "is required"},
		{"array element not an object", "[" + good + ",5]", 400, "", 1, "must be a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := s.post(t, "/webhook", "", tt.body)
			if status != tt.status {
				t.Fatalf("status = %d %v, want %d", status, body, tt.status)
			}
			msg, _ := body["error"].(string)
			if !strings.Contains(msg, tt.reason) {
				t.Errorf("error %q does not say %q", msg, tt.reason)
			}
			if got, _ := body["field"].(string); got != tt.field {
				t.Errorf("field = %q, want %q", got, tt.field)
			}
			index, hasIndex := body["index"].(float64)
			if (tt.index >= 0) != hasIndex || (hasIndex && index != tt.index) {
				t.Errorf("index = %v (present %v), want %v", index, hasIndex, tt.index)
			}
		})
	}
	// Nothing of any refused request is stored, not even the valid events of a refused array.
	if got := rowCount(t, conn); got != 0 {
		t.Errorf("rows = %d, want 0", got)
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"MAX_BODY_BYTES": "1000"})
	conn := s.db(t)
	big := `{"type":"track","userId":"u","event":"e","properties":{"pad":"` + strings.Repeat("x", 1000) + `"}}`
	status, body := s.post(t, "/webhook", "", big)
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body["error"].(string), "too large") {
		t.Errorf("oversized body = %d %v, want 413", status, body)
	}
	// Without a Content-Length the limit is enforced while reading.
	req, _ := http.NewRequest(http.MethodPost, s.url+"/webhook", struct{ *strings.Reader }{strings.NewReader(big)})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || req.ContentLength != 0 {
		t.Errorf("chunked oversized body = %d (content length %d), want 413", resp.StatusCode, req.ContentLength)
	}
	if status, _ := s.post(t, "/webhook", "", trackEvent("small", "u")); status != http.StatusOK {
		t.Errorf("a body under the limit = %d", status)
	}
	if got := rowCount(t, conn); got != 1 {
		t.Errorf("rows = %d, want 1", got)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	if status, body := s.get(t, "/healthz"); status != http.StatusOK || body["status"] != "ok" {
		t.Errorf("/healthz = %d %v", status, body)
	}
	if status, body := s.get(t, "/readyz"); status != http.StatusOK || body["status"] != "ready" {
		t.Errorf("/readyz = %d %v", status, body)
	}
	conn := s.db(t)
	if _, err := conn.Exec(context.Background(), `DELETE FROM goose_db_version WHERE version_id > 0`); err != nil {
		t.Fatal(err)
	}
	if status, body := s.get(t, "/readyz"); status != http.StatusServiceUnavailable || !strings.Contains(body["error"].(string), "migrate up") {
		t.Errorf("/readyz with an unmigrated schema = %d %v, want 503 naming the fix", status, body)
	}
	if status, body := s.do(t, "/nowhere", http.Header{}, "{}"); status != http.StatusNotFound || body["error"] == nil {
		t.Errorf("unknown path = %d %v, want a 404 JSON error", status, body)
	}
}

func TestALoneEventIsWrittenAtOnce(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	var slowest time.Duration
	for i := range 5 {
		start := time.Now()
		if status, _ := s.post(t, "/webhook", "", trackEvent(fmt.Sprint("lone", i), "u")); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		slowest = max(slowest, time.Since(start))
		time.Sleep(20 * time.Millisecond) // idle between events
	}
	// A fixed batching delay would show here; a commit on this machine takes a few ms.
	if slowest > 500*time.Millisecond {
		t.Errorf("slowest lone event took %s to be acknowledged", slowest)
	}
}

func TestShutdownUnderLoadLosesNoAcknowledgedEvent(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	conn := s.db(t)

	var (
		acked   sync.Map
		nAcked  atomic.Int64
		notOK   atomic.Int64
		sent    atomic.Int64
		wg      sync.WaitGroup
		stopped = make(chan struct{})
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopped:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				sent.Add(1)
				resp, err := client.Post(s.url+"/webhook", "application/json", strings.NewReader(trackEvent(id, "u")))
				if err != nil {
					return // the listener is closed: the sender would retry elsewhere
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					acked.Store(id, true)
					nAcked.Add(1)
				} else {
					// A graceful stop answers what it accepted with its commit, never 503.
					notOK.Add(1)
				}
			}
		})
	}
	// Stop once the load is well under way.
	for nAcked.Load() < 300 {
		time.Sleep(5 * time.Millisecond)
	}
	err := s.stop(t)
	close(stopped)
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("run returned %v after a graceful stop", err)
	}

	missing := 0
	acked.Range(func(id, _ any) bool {
		if queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id = $1`, id) != 1 {
			missing++
		}
		return true
	})
	t.Logf("sent %d, acknowledged %d, missing %d", sent.Load(), nAcked.Load(), missing)
	if missing > 0 {
		t.Errorf("%d acknowledged events are not in the database", missing)
	}
	if n := notOK.Load(); n > 0 {
		t.Errorf("%d requests answered other than 200 during the graceful stop", n)
	}
}

func TestStartupErrorsNameTheSetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no database URL", map[string]string{}, "DATABASE_URL: is required"},
		{"unreachable database", map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/x?sslmode=disable"}, "connect to database 127.0.0.1:1/x"},
		{"ack timeout past Segment's", map[string]string{"DATABASE_URL": "postgres://x", "ACK_TIMEOUT": "6s"}, "ACK_TIMEOUT"},
		{"not a number", map[string]string{"DATABASE_URL": "postgres://x", "BATCH_MAX_EVENTS": "many"}, "BATCH_MAX_EVENTS"},
		{"bad log format", map[string]string{"DATABASE_URL": "postgres://x", "LOG_FORMAT": "xml"}, "LOG_FORMAT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(context.Background(), nil, func(k string) string { return tt.env[k] }, &lockedBuffer{}, &lockedBuffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func signWith(key, body string) string { return httpapi.Sign(key, []byte(body)) }
