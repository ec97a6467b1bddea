package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		raw   string
		check func(t *testing.T, e Event)
	}{
		{
			name: "track with every common field",
			raw: `{"type":"track","messageId":"m1","userId":"u1","anonymousId":"a1","event":"Order Completed",
				"properties":{"revenue":9.5},"context":{"ip":"1.2.3.4"},"integrations":{"All":true},
				"timestamp":"2024-05-01T11:00:00.123Z","sentAt":"2024-05-01T11:00:01Z","receivedAt":"2024-05-01T11:00:02+02:00"}`,
			check: func(t *testing.T, e Event) {
				want := Event{Type: Track, MessageID: "m1", UserID: "u1", AnonymousID: "a1", Event: "Order Completed"}
				if e.Type != want.Type || e.MessageID != want.MessageID || e.UserID != want.UserID || e.AnonymousID != want.AnonymousID || e.Event != want.Event {
					t.Errorf("got %+v", e)
				}
				assertJSON(t, "properties", e.Properties, `{"revenue":9.5}`)
				assertJSON(t, "context", e.Context, `{"ip":"1.2.3.4"}`)
				assertJSON(t, "integrations", e.Integrations, `{"All":true}`)
				assertTime(t, "timestamp", e.Timestamp, "2024-05-01T11:00:00.123Z")
				assertTime(t, "receivedAt", e.ReceivedAt, "2024-05-01T09:00:02Z")
				if e.Extra != nil {
					t.Errorf("extra = %s, want none", e.Extra)
				}
			},
		},
		{
			name: "identify keeps traits, unknown fields go to extra",
			raw:  `{"type":"identify","userId":"u1","traits":{"email":"a@b.c"},"channel":"server","version":2,"properties":{"x":1}}`,
			check: func(t *testing.T, e Event) {
				assertJSON(t, "traits", e.Traits, `{"email":"a@b.c"}`)
				assertJSON(t, "extra", e.Extra, `{"channel":"server","properties":{"x":1},"version":2}`)
			},
		},
		{
			name: "page with name and category",
			raw:  `{"type":"page","anonymousId":"a1","name":"Home","category":"Docs","properties":{"path":"/"}}`,
			check: func(t *testing.T, e Event) {
				if e.Name != "Home" || e.Category != "Docs" || e.UserID != "" || e.AnonymousID != "a1" {
					t.Errorf("got %+v", e)
				}
				assertJSON(t, "properties", e.Properties, `{"path":"/"}`)
			},
		},
		{
			name: "screen",
			raw:  `{"type":"screen","userId":"u1","name":"Settings"}`,
			check: func(t *testing.T, e Event) {
				if e.Type != Screen || e.Name != "Settings" {
					t.Errorf("got %+v", e)
				}
			},
		},
		{
			name: "group",
			raw:  `{"type":"group","userId":"u1","groupId":"g1","traits":{"plan":"pro"}}`,
			check: func(t *testing.T, e Event) {
				if e.GroupID != "g1" {
					t.Errorf("groupId = %q", e.GroupID)
				}
				assertJSON(t, "traits", e.Traits, `{"plan":"pro"}`)
			},
		},
		{
			name: "alias",
			raw:  `{"type":"alias","userId":"u2","previousId":"u1"}`,
			check: func(t *testing.T, e Event) {
				if e.PreviousID != "u1" || e.UserID != "u2" {
					t.Errorf("got %+v", e)
				}
			},
		},
		{
			name: "escaped strings are decoded",
			raw:  `{"type":"track","userId":"\u00e9\"x","event":"a\\u0000b"}`,
			check: func(t *testing.T, e Event) {
				if e.UserID != "é\"x" || e.Event != `a\u0000b` {
					t.Errorf("userId = %q, event = %q", e.UserID, e.Event)
				}
			},
		},
		{
			name: "null fields are absent",
			raw:  `{"type":"track","userId":null,"anonymousId":"a1","event":"E","context":null,"timestamp":null}`,
			check: func(t *testing.T, e Event) {
				if e.UserID != "" || e.Context != nil || !e.Timestamp.Equal(now) {
					t.Errorf("got %+v", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := Decode([]byte(tt.raw), now)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if e.Size == 0 || e.MessageID == "" {
				t.Errorf("size %d, messageId %q: both must be set", e.Size, e.MessageID)
			}
			tt.check(t, e)
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		raw    string
		field  string
		reason string
	}{
		{"not an object", `[1]`, "", "event must be a JSON object"},
		{"a string", `"track"`, "", "event must be a JSON object"},
		{"empty", ``, "", "event must be a JSON object"},
		{"broken JSON", `{"type":"track",`, "", "invalid JSON"},
		{"no type", `{"userId":"u"}`, "type", "is required"},
		{"unknown type", `{"type":"click","userId":"u"}`, "type", "must be one of identify, track, page, screen, group, alias"},
		{"type not a string", `{"type":1,"userId":"u"}`, "type", "must be a string"},
		{"track without event", `{"type":"track","userId":"u"}`, "event", "is required"},
		{"track with empty event", `{"type":"track","userId":"u","event":""}`, "event", "is required"},
		{"track event not a string", `{"type":"track","userId":"u","event":5}`, "event", "must be a string"},
		{"group without groupId", `{"type":"group","userId":"u"}`, "groupId", "is required"},
		{"alias without previousId", `{"type":"alias","userId":"u"}`, "previousId", "is required"},
		{"alias without userId", `{"type":"alias","anonymousId":"a","previousId":"p"}`, "userId", "is required"},
		{"no user or anonymous id", `{"type":"identify","traits":{}}`, "userId", "userId or anonymousId is required"},
		{"empty ids", `{"type":"identify","userId":"","anonymousId":""}`, "userId", "userId or anonymousId is required"},
		{"userId a number", `{"type":"identify","userId":42}`, "userId", "must be a string"},
		{"anonymousId an object", `{"type":"identify","anonymousId":{}}`, "anonymousId", "must be a string"},
		{"messageId a number", `{"type":"identify","userId":"u","messageId":7}`, "messageId", "must be a string"},
		{"context an array", `{"type":"identify","userId":"u","context":[]}`, "context", "must be a JSON object"},
		{"integrations a string", `{"type":"identify","userId":"u","integrations":"x"}`, "integrations", "must be a JSON object"},
		{"traits a string", `{"type":"identify","userId":"u","traits":"x"}`, "traits", "must be a JSON object"},
		{"properties a number", `{"type":"page","userId":"u","properties":1}`, "properties", "must be a JSON object"},
		{"group traits an array", `{"type":"group","userId":"u","groupId":"g","traits":[]}`, "traits", "must be a JSON object"},
		{"timestamp not a date", `{"type":"identify","userId":"u","timestamp":"2024-13-45T00:00:00Z"}`, "timestamp", "must be an ISO 8601 date-time"},
		{"timestamp without zone", `{"type":"identify","userId":"u","timestamp":"2024-05-01T00:00:00"}`, "timestamp", "must be an ISO 8601 date-time"},
		{"sentAt a number", `{"type":"identify","userId":"u","sentAt":1714557600}`, "sentAt", "must be a string"},
		{"receivedAt garbage", `{"type":"identify","userId":"u","receivedAt":"yesterday"}`, "receivedAt", "must be an ISO 8601 date-time"},
		{"originalTimestamp garbage", `{"type":"identify","userId":"u","originalTimestamp":"x"}`, "originalTimestamp", "must be an ISO 8601 date-time"},
		{"page name not a string", `{"type":"page","userId":"u","name":1}`, "name", "must be a string"},
		{"NUL in userId", `{"type":"identify","userId":"a\u0000b"}`, "userId", `contains \u0000`},
		{"NUL nested in properties", `{"type":"track","userId":"u","event":"e","properties":{"a":{"b":["\u0000"]}}}`, "properties", `contains \u0000`},
		{"NUL in a nested key", `{"type":"track","userId":"u","event":"e","properties":{"k\u0000":1}}`, "properties", `contains \u0000`},
		{"NUL in an extra field", `{"type":"track","userId":"u","event":"e","note":"\u0000"}`, "note", `contains \u0000`},
		{"NUL in an extra field name", `{"type":"track","userId":"u","event":"e","n\u0000te":1}`, "n\x00te", `contains \u0000`},
		{"lone high surrogate", `{"type":"track","userId":"u","event":"\ud800"}`, "event", "lone UTF-16 surrogate"},
		{"lone low surrogate", `{"type":"track","userId":"u","event":"e","context":{"x":"\udc00"}}`, "context", "lone UTF-16 surrogate"},
		{"high surrogate then non-surrogate", `{"type":"track","userId":"u","event":"\ud800\u0041"}`, "event", "lone UTF-16 surrogate"},
		{"invalid UTF-8", "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"\xff\"}", "event", "invalid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(tt.raw), now)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Decode(%s) error = %v, want a *FieldError", tt.raw, err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Reason, tt.reason) {
				t.Errorf("got field %q reason %q, want field %q reason containing %q", fe.Field, fe.Reason, tt.field, tt.reason)
			}
		})
	}
}

func TestDecodeAcceptsValidSurrogatePairsAndEscapedBackslashes(t *testing.T) {
	t.Parallel()
	e, err := Decode([]byte(`{"type":"track","userId":"u","event":"\ud83d\ude00","properties":{"p":"C:\\u0000\\","q":"\\\u00e9"}}`), now)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if e.Event != "😀" {
		t.Errorf("event = %q", e.Event)
	}
}

func TestTimestampRule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                          string
		fields                        string
		wantTimestamp, wantReceivedAt string
	}{
		{"explicit timestamp wins", `"timestamp":"2024-01-01T00:00:00Z","originalTimestamp":"2023-01-01T00:00:00Z","sentAt":"2023-01-01T00:00:05Z"`, "2024-01-01T00:00:00Z", "2024-05-01T12:00:00Z"},
		{"skew corrected from sentAt and originalTimestamp", `"originalTimestamp":"2024-05-01T10:00:00Z","sentAt":"2024-05-01T10:00:05Z","receivedAt":"2024-05-01T11:00:10Z"`, "2024-05-01T11:00:05Z", "2024-05-01T11:00:10Z"},
		{"skew corrected against the server clock", `"originalTimestamp":"2024-05-01T10:00:00Z","sentAt":"2024-05-01T10:00:30Z"`, "2024-05-01T11:59:30Z", "2024-05-01T12:00:00Z"},
		{"originalTimestamp alone", `"originalTimestamp":"2024-05-01T10:00:00.5+02:00"`, "2024-05-01T08:00:00.5Z", "2024-05-01T12:00:00Z"},
		{"sentAt alone falls back to receivedAt", `"sentAt":"2024-05-01T10:00:00Z","receivedAt":"2024-05-01T11:00:00Z"`, "2024-05-01T11:00:00Z", "2024-05-01T11:00:00Z"},
		{"nothing: the server clock", ``, "2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"},
		{"offset without colon", `"timestamp":"2024-05-01T10:00:00.000+0130"`, "2024-05-01T08:30:00Z", "2024-05-01T12:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw := `{"type":"identify","userId":"u"`
			if tt.fields != "" {
				raw += "," + tt.fields
			}
			e, err := Decode([]byte(raw+"}"), now)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertTime(t, "timestamp", e.Timestamp, tt.wantTimestamp)
			assertTime(t, "receivedAt", e.ReceivedAt, tt.wantReceivedAt)
		})
	}
}

func TestDerivedMessageID(t *testing.T) {
	t.Parallel()
	decode := func(raw string) string {
		t.Helper()
		e, err := Decode([]byte(raw), now)
		if err != nil {
			t.Fatalf("Decode(%s): %v", raw, err)
		}
		return e.MessageID
	}
	base := decode(`{"type":"track","userId":"u","event":"E","properties":{"a":1}}`)
	if !strings.HasPrefix(base, DerivedMessageIDPrefix) || len(base) != len(DerivedMessageIDPrefix)+32 {
		t.Fatalf("derived messageId %q has the wrong form", base)
	}
	tests := []struct {
		name string
		raw  string
		same bool
	}{
		{"same content, fields reordered", `{"event":"E","properties":{"a":1},"userId":"u","type":"track"}`, true},
		{"same content, a retry with a new sentAt", `{"type":"track","userId":"u","event":"E","properties":{"a":1},"sentAt":"2024-01-01T00:00:00Z"}`, true},
		{"null messageId counts as absent", `{"type":"track","userId":"u","event":"E","properties":{"a":1},"messageId":null}`, true},
		{"different property", `{"type":"track","userId":"u","event":"E","properties":{"a":2}}`, false},
		{"different user", `{"type":"track","userId":"v","event":"E","properties":{"a":1}}`, false},
		{"different time", `{"type":"track","userId":"u","event":"E","properties":{"a":1},"timestamp":"2024-01-01T00:00:00Z"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decode(tt.raw); (got == base) != tt.same {
				t.Errorf("messageId %q vs %q: same = %v, want %v", got, base, got == base, tt.same)
			}
		})
	}
	if got := decode(`{"type":"track","userId":"u","event":"E","messageId":"given"}`); got != "given" {
		t.Errorf("a given messageId was replaced by %q", got)
	}
}

func assertJSON(t *testing.T, name string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: %s is not JSON: %v", name, got, err)
		return
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("%s = %s, want %s", name, gb, wb)
	}
}

func assertTime(t *testing.T, name string, got time.Time, want string) {
	t.Helper()
	w, err := time.Parse(time.RFC3339Nano, want)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(w) {
		t.Errorf("%s = %s, want %s", name, got.UTC().Format(time.RFC3339Nano), want)
	}
}

func TestDecodeWithTrackingAPIRules(t *testing.T) {
	t.Parallel()
	envelope := &Envelope{
		Context:      json.RawMessage(`{"library":{"name":"analytics-go","version":"3.3.0"},"ip":"10.0.0.1"}`),
		Integrations: json.RawMessage(`{"All":true}`),
		SentAt:       json.RawMessage(`"2024-05-01T11:59:50Z"`),
	}
	tests := []struct {
		name  string
		raw   string
		opts  Options
		check func(t *testing.T, e Event)
	}{
		{
			name: "the endpoint gives the type",
			raw:  `{"userId":"u","event":"E"}`,
			opts: Options{Type: Track},
			check: func(t *testing.T, e Event) {
				if e.Type != Track || e.Event != "E" {
					t.Errorf("got %+v", e)
				}
			},
		},
		{
			name: "client timestamp becomes originalTimestamp, corrected for skew; receivedAt is ours",
			raw:  `{"type":"identify","userId":"u","timestamp":"2024-05-01T11:00:00Z","sentAt":"2024-05-01T11:00:10Z","receivedAt":"1999-01-01T00:00:00Z","writeKey":"k"}`,
			opts: Options{Collect: true},
			check: func(t *testing.T, e Event) {
				assertTime(t, "originalTimestamp", e.OriginalTimestamp, "2024-05-01T11:00:00Z")
				assertTime(t, "receivedAt", e.ReceivedAt, "2024-05-01T12:00:00Z")
				assertTime(t, "timestamp", e.Timestamp, "2024-05-01T11:59:50Z")
				if e.Extra != nil {
					t.Errorf("extra = %s: writeKey must not be stored", e.Extra)
				}
			},
		},
		{
			name: "an escaped writeKey is not stored either",
			raw:  `{"type":"identify","userId":"u","writ\u0065Key":"k","channel":"server"}`,
			opts: Options{Collect: true},
			check: func(t *testing.T, e Event) {
				assertJSON(t, "extra", e.Extra, `{"channel":"server"}`)
			},
		},
		{
			name: "batch envelope merged under the event",
			raw:  `{"type":"track","userId":"u","event":"E","context":{"ip":"1.1.1.1"},"timestamp":"2024-05-01T11:59:40Z"}`,
			opts: Options{Collect: true, Batch: envelope},
			check: func(t *testing.T, e Event) {
				assertJSON(t, "context", e.Context, `{"ip":"1.1.1.1","library":{"name":"analytics-go","version":"3.3.0"}}`)
				assertJSON(t, "integrations", e.Integrations, `{"All":true}`)
				assertTime(t, "sentAt", e.SentAt, "2024-05-01T11:59:50Z")
				assertTime(t, "timestamp", e.Timestamp, "2024-05-01T11:59:50Z")
			},
		},
		{
			name: "an event's own sentAt wins over the envelope's",
			raw:  `{"type":"track","userId":"u","event":"E","sentAt":"2024-05-01T11:00:00Z"}`,
			opts: Options{Collect: true, Batch: envelope},
			check: func(t *testing.T, e Event) {
				assertTime(t, "sentAt", e.SentAt, "2024-05-01T11:00:00Z")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.opts.Now = now
			e, err := DecodeWith([]byte(tt.raw), tt.opts)
			if err != nil {
				t.Fatalf("DecodeWith: %v", err)
			}
			tt.check(t, e)
		})
	}

	invalid := []struct {
		name, raw string
		opts      Options
		field     string
	}{
		{"another type than the endpoint's", `{"type":"page","userId":"u"}`, Options{Type: Track}, "type"},
		{"event context not an object under an envelope", `{"type":"track","userId":"u","event":"E","context":"x"}`, Options{Batch: envelope}, "context"},
		{"a bad client timestamp is named as sent", `{"type":"track","userId":"u","event":"E","timestamp":"soon"}`, Options{Collect: true}, "timestamp"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.opts.Now = now
			_, err := DecodeWith([]byte(tt.raw), tt.opts)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("DecodeWith = %v, want a FieldError on %q", err, tt.field)
			}
		})
	}
}

func TestDecodeEdges(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("x", n) }
	// n nested objects; the event itself is the first level.
	nest := func(n int) string { return strings.Repeat(`{"a":`, n) + `1` + strings.Repeat(`}`, n) }
	tests := []struct {
		name   string
		raw    string
		field  string // "" with ok: accepted
		reason string
		ok     bool
	}{
		{name: "numbers beyond float64 and int64 are kept", raw: `{"type":"track","userId":"u","event":"e","properties":{"big":1e400,"int":123456789012345678901234567890}}`, ok: true},
		{name: "the largest number PostgreSQL holds", raw: `{"type":"track","userId":"u","event":"e","properties":{"n":9.9e131071,"m":-1e-16383}}`, ok: true},
		{name: "a number too large for PostgreSQL", raw: `{"type":"track","userId":"u","event":"e","properties":{"n":1e131072}}`, field: "properties", reason: "too large or too precise"},
		{name: "a number too precise for PostgreSQL", raw: `{"type":"track","userId":"u","event":"e","properties":{"n":1.5e-16383}}`, field: "properties", reason: "too large or too precise"},
		{name: "too many fraction digits", raw: `{"type":"track","userId":"u","event":"e","properties":{"n":0.` + strings.Repeat("1", maxNumericScale+1) + `}}`, field: "properties", reason: "too large or too precise"},
		{name: "a huge exponent", raw: `{"type":"track","userId":"u","event":"e","properties":{"n":1e99999999999999999999}}`, field: "properties", reason: "too large or too precise"},
		{name: "nesting up to the limit", raw: `{"type":"track","userId":"u","event":"e","properties":` + nest(MaxDepth-1) + `}`, ok: true},
		{name: "nesting past the limit names the field", raw: `{"type":"track","userId":"u","event":"e","properties":` + nest(MaxDepth) + `}`, field: "properties", reason: "nested deeper than 64"},
		{name: "messageId at Segment's cap", raw: `{"type":"track","userId":"u","event":"e","messageId":"` + long(100) + `"}`, ok: true},
		{name: "messageId past Segment's cap", raw: `{"type":"track","userId":"u","event":"e","messageId":"` + long(101) + `"}`, field: "messageId", reason: "longer than 100 characters"},
		{name: "userId too long to index", raw: `{"type":"track","userId":"` + long(1025) + `","event":"e"}`, field: "userId", reason: "longer than 1024 bytes"},
		{name: "event name too long to index", raw: `{"type":"track","userId":"u","event":"` + long(1025) + `"}`, field: "event", reason: "longer than 1024 bytes"},
		{name: "a long string in properties is fine", raw: `{"type":"track","userId":"u","event":"e","properties":{"s":"` + long(100000) + `"}}`, ok: true},
		{name: "duplicate keys: the last wins", raw: `{"type":"track","userId":"first","event":"e","userId":"last"}`, ok: true},
		{name: "lowercase t and z", raw: `{"type":"track","userId":"u","event":"e","timestamp":"2024-05-01t10:00:00.5z"}`, ok: true},
		{name: "space separator", raw: `{"type":"track","userId":"u","event":"e","timestamp":"2024-05-01 10:00:00+02:00"}`, ok: true},
		{name: "a date without a time", raw: `{"type":"track","userId":"u","event":"e","timestamp":"2024-05-01"}`, field: "timestamp", reason: "ISO 8601"},
		{name: "February 30th", raw: `{"type":"track","userId":"u","event":"e","timestamp":"2024-02-30T00:00:00Z"}`, field: "timestamp", reason: "ISO 8601"},
		{name: "a lone z (found by fuzzing: it crashed the parser)", raw: `{"type":"track","userId":"u","event":"e","timestamp":"z"}`, field: "timestamp", reason: "ISO 8601"},
		{name: "a Unix time", raw: `{"type":"track","userId":"u","event":"e","timestamp":"1714557600"}`, field: "timestamp", reason: "ISO 8601"},
		{name: "many keys", raw: `{"type":"track","userId":"u","event":"e","properties":{` + manyKeys(20000) + `}}`, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := Decode([]byte(tt.raw), now)
			if tt.ok {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if tt.name == "duplicate keys: the last wins" && e.UserID != "last" {
					t.Errorf("userId = %q, want the last one", e.UserID)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(fe.Reason, tt.reason) {
				t.Errorf("Decode = %v, want field %q and a reason containing %q", err, tt.field, tt.reason)
			}
		})
	}
}

func manyKeys(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = `"k` + strconv.Itoa(i) + `":` + strconv.Itoa(i)
	}
	return strings.Join(parts, ",")
}

func TestClientIPFillsContextIP(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, context, want string }{
		{"no context", ``, `{"ip":"198.51.100.7"}`},
		{"empty context", `,"context":{ }`, `{"ip":"198.51.100.7"}`},
		{"context without ip", `,"context":{"locale":"de-DE","page":{"ip":"nested, not it"}}`, `{"ip":"198.51.100.7","locale":"de-DE","page":{"ip":"nested, not it"}}`},
		{"the client's own ip wins", `,"context":{"ip":"203.0.113.1"}`, `{"ip":"203.0.113.1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := DecodeWith([]byte(`{"type":"track","userId":"u","event":"E"`+tt.context+`}`), Options{Now: now, Collect: true, ClientIP: "198.51.100.7"})
			if err != nil {
				t.Fatal(err)
			}
			assertJSON(t, "context", e.Context, tt.want)
		})
	}
}

func TestEndpointTypeMayBeEscaped(t *testing.T) {
	t.Parallel()
	if _, err := DecodeWith([]byte(`{"type":"tr\u0061ck","userId":"u","event":"E"}`), Options{Now: now, Type: Track}); err != nil {
		t.Errorf("an escaped type equal to the endpoint's: %v", err)
	}
}

func TestArrayElementsNestAsDeepAsALoneEvent(t *testing.T) {
	t.Parallel()
	deep := `{"type":"track","userId":"u","event":"E","properties":` + strings.Repeat(`{"a":`, MaxDepth-1) + `1` + strings.Repeat(`}`, MaxDepth-1) + `}`
	if _, err := Decode([]byte(deep), now); err != nil {
		t.Fatalf("alone: %v", err)
	}
	elems, err := SplitArray([]byte("[" + deep + "]"))
	if err != nil || len(elems) != 1 {
		t.Errorf("in an array: %v", err)
	}
}

func TestTrimSpaceKeepsNonJSONWhitespace(t *testing.T) {
	t.Parallel()
	if got := string(TrimSpace([]byte(" \t\r\n[1]\n "))); got != "[1]" {
		t.Errorf("TrimSpace = %q", got)
	}
	if got := string(TrimSpace([]byte("\v[1]\u00a0"))); got != "\v[1]\u00a0" {
		t.Errorf("TrimSpace took non-JSON whitespace: %q", got)
	}
	if _, err := SplitArray([]byte("\v[1]")); err == nil {
		t.Error("an array after a vertical tab is not JSON")
	}
}

func TestMembersSplitsAnEnvelopeWithoutCopying(t *testing.T) {
	raw := []byte(` {"batch":[{"a":1}],"w\u0061": "x", "n":null} `)
	got := map[string]string{}
	var batch []byte
	err := Members(raw, func(name string, value []byte) {
		got[name] = string(value)
		if name == "batch" {
			batch = value
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["batch"] != `[{"a":1}]` || got["wa"] != `"x"` || got["n"] != "null" {
		t.Errorf("members = %q", got)
	}
	raw[bytes.Index(raw, []byte("1"))] = '2'
	if string(batch) != `[{"a":2}]` {
		t.Errorf("the batch value %s is a copy, not a slice of the body", batch)
	}
	for _, bad := range []string{`[1]`, `{"a":1} x`, `{"a":}`, ``} {
		if err := Members([]byte(bad), func(string, []byte) {}); err == nil {
			t.Errorf("Members(%q) accepted it", bad)
		}
	}
}
