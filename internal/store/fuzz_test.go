package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segment-sink/segment-sink/internal/event"
	"github.com/segment-sink/segment-sink/internal/store"
)

// FuzzStoreRoundTrip checks the promise end to end: an event the decoder accepts is written,
// and read back, exactly; an event it refuses never reaches the database. Its seed corpus is the
// decoder's (internal/event/testdata/fuzz/FuzzDecode), which holds every hostile edge.
func FuzzStoreRoundTrip(f *testing.F) {
	seeds, _ := filepath.Glob("../event/testdata/fuzz/FuzzDecode/*")
	for _, path := range seeds {
		if raw, err := readCorpusBytes(path); err == nil {
			f.Add(raw)
		}
	}
	s, conn := openWith(f, store.Options{})
	ctx := context.Background()

	var n atomic.Int64
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := event.Decode(raw, time.Now())
		if err != nil {
			return // refused: nothing reaches the store
		}
		// A fresh id per input: a redelivery's rules (what does not rewrite a row) are tested
		// elsewhere; here every accepted event must come back exactly as it went in.
		e.MessageID = fmt.Sprintf("fuzz-%d-%d", os.Getpid(), n.Add(1))
		if _, err := s.Write(ctx, []event.Event{e}); err != nil {
			t.Fatalf("an accepted event failed to store: %v\n%q", err, raw)
		}
		var userID, anonID, props, traits, ctxJSON, integ, extra *string
		var ts time.Time
		table := pgx.Identifier{e.Type.Table()}.Sanitize()
		var propsCol, traitsCol = "NULL::jsonb", "NULL::jsonb"
		switch e.Type {
		case event.Track, event.Page, event.Screen:
			propsCol = "properties"
		case event.Identify, event.Group:
			traitsCol = "traits"
		}
		err = conn.QueryRow(ctx, `SELECT user_id, anonymous_id, `+propsCol+`::text, `+traitsCol+`::text, context::text,
			integrations::text, extra::text, "timestamp" FROM `+table+` WHERE message_id = $1`, e.MessageID).
			Scan(&userID, &anonID, &props, &traits, &ctxJSON, &integ, &extra, &ts)
		if err != nil {
			t.Fatalf("read back %s: %v", e.MessageID, err)
		}
		if deref(userID) != e.UserID || deref(anonID) != e.AnonymousID || !ts.Equal(e.Timestamp.Truncate(time.Microsecond)) && ts.Sub(e.Timestamp).Abs() > time.Microsecond {
			t.Fatalf("columns differ: %q %q %s, want %q %q %s", deref(userID), deref(anonID), ts, e.UserID, e.AnonymousID, e.Timestamp)
		}
		for name, pair := range map[string][2]any{"properties": {props, e.Properties}, "traits": {traits, e.Traits},
			"context": {ctxJSON, e.Context}, "integrations": {integ, e.Integrations}, "extra": {extra, e.Extra}} {
			sameJSON(t, name, pair[0].(*string), pair[1].(json.RawMessage))
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// sameJSON compares what jsonb gave back with what was sent, as JSON values: jsonb rewrites
// numbers (1e2 comes back as 100) and keeps the last of duplicate keys.
func sameJSON(t *testing.T, name string, stored *string, sent json.RawMessage) {
	t.Helper()
	if (stored == nil) != (sent == nil) {
		t.Fatalf("%s: stored %v, sent %s", name, stored, sent)
	}
	if stored == nil {
		return
	}
	a, errA := decodeNumbers(*stored)
	b, errB := decodeNumbers(string(sent))
	if err := errors.Join(errA, errB); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !equalJSON(a, b) {
		t.Fatalf("%s: stored %s, sent %s", name, *stored, sent)
	}
}

func decodeNumbers(s string) (any, error) {
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	return v, d.Decode(&v)
}

func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !equalJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		var p, q big.Rat
		_, okP := p.SetString(string(x))
		_, okQ := q.SetString(string(y))
		return okP && okQ && p.Cmp(&q) == 0
	default:
		return a == b
	}
}

// readCorpusBytes reads the []byte of a one-value `go test fuzz v1` file.
func readCorpusBytes(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_, value, _ := strings.Cut(string(b), "\n")
	value = strings.TrimSpace(value)
	value = strings.TrimSuffix(strings.TrimPrefix(value, "[]byte("), ")")
	s, err := strconv.Unquote(value)
	return []byte(s), err
}
