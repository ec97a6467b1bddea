package event

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var fuzzSeeds = []string{
	string(benchEvent),
	`{"type":"track","userId":"u","event":"E","properties":{"a":[1,2.5e-3,-0,true,false,null,"x\"y\\z\u00e9\ud83d\ude00"]}}`,
	`{"type":"identify","userId":"a\u0000b"}`,
	`{"type":"identify","userId":"\\u0000"}`,
	`{"type":"identify","userId":"\ud800"}`,
	`{"type":"identify","userId":"\udc00\ud800"}`,
	"{\"type\":\"identify\",\"userId\":\"\xff\"}",
	`{"type":"page","anonymousId":"a","properties":{"n":1e200000}}`,
	`{"type":"group","userId":"u","groupId":"g","traits":{"employees":123456789012345678901234567890}}`,
	`{"type":"alias","userId":"u","previousId":"p","userId":"v"}`,
	`{"type":"track","userId":"u","event":"E","x":{"y":{"z":[[[[{}]]]]}}}`,
	`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a" 1}`, `{"a":1,}`,
	`{"a":[1,]}`, `{,}`, `{"a":tru}`, `{"a":nul}`, "{\"a\":\"\t\"}", `{"a":1} x`, `{} `, ` {}`, `[]`, `"s"`, `1`, ``,
	`{"type":"track","userId":"u","event":"E","timestamp":"2024-02-30T00:00:00Z"}`,
	`{"type":"track","userId":"u","event":"E","timestamp":"2024-01-01T00:00:00.123456789+05:30"}`,
	`{"type":"track","userId":"u","event":"E","n\u0000te":1}`,
	`{"type":"track","userId":"u","event":"E","a":1,"a":2}`,
	`{"type":"track","userId":"u","event":"E","deep":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
}

// FuzzScanner checks the hand-written scanner against encoding/json: the same documents are
// valid JSON, apart from nesting beyond MaxDepth, which only the scanner refuses.
func FuzzScanner(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := scanner{data: data}
		s.skipSpace()
		err := s.value(0)
		if err == nil {
			s.skipSpace()
			if s.pos < len(data) {
				err = errors.New("trailing data")
			}
		}
		valid := json.Valid(data)
		var se *syntaxError
		deep := errors.As(err, &se) && strings.Contains(se.msg, "nested deeper")
		if (err == nil) != valid && !deep {
			t.Fatalf("scanner error %v, encoding/json valid %v, for %q", err, valid, data)
		}
		if err == nil && s.text == "" && !utf8.Valid(data) {
			t.Fatalf("invalid UTF-8 not reported in %q", data)
		}
	})
}

// FuzzDecode checks that decoding never panics, and that an accepted event holds only valid
// JSON objects in its JSON fields and the required fields of its type.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data, now)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Reason == "" {
				t.Fatalf("error %v is not a FieldError with a reason", err)
			}
			return
		}
		for name, raw := range map[string][]byte{"context": e.Context, "integrations": e.Integrations,
			"properties": e.Properties, "traits": e.Traits, "extra": e.Extra} {
			if raw == nil {
				continue
			}
			if !json.Valid(raw) || raw[0] != '{' {
				t.Fatalf("%s = %q is not a JSON object", name, raw)
			}
			if reason := checkText(raw); reason != "" {
				t.Fatalf("%s = %q: %s", name, raw, reason)
			}
		}
		if e.MessageID == "" || (e.UserID == "" && e.AnonymousID == "") || e.Timestamp.IsZero() || e.ReceivedAt.IsZero() {
			t.Fatalf("accepted without a required field: %+v", e)
		}
		for _, s := range []string{e.MessageID, e.UserID, e.AnonymousID, e.Event, e.Name, e.Category, e.GroupID, e.PreviousID} {
			if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
				t.Fatalf("accepted text PostgreSQL cannot store: %q", s)
			}
		}
		switch {
		case e.Type == Track && e.Event == "", e.Type == Group && e.GroupID == "", e.Type == Alias && (e.PreviousID == "" || e.UserID == ""):
			t.Fatalf("accepted a %s without its required field: %+v", e.Type, e)
		}
	})
}
