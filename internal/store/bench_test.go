package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/segment-sink/segment-sink/internal/event"
)

// flushOf decodes n realistic events of mixed types, as one flush holds them.
func flushOf(b *testing.B, n int) []event.Event {
	b.Helper()
	types := []string{`"type":"track","event":"Order Completed","properties":{"revenue":25,"currency":"USD"}`,
		`"type":"page","name":"Pricing","properties":{"path":"/pricing"}`, `"type":"identify","traits":{"email":"a@b.c"}`}
	events := make([]event.Event, n)
	for i := range events {
		raw := fmt.Sprintf(`{%s,"messageId":"m%d","userId":"u%d","context":{"ip":"203.0.113.9","library":{"name":"analytics.js"}},"timestamp":"2024-05-01T10:00:00Z","channel":"client"}`,
			types[i%len(types)], i, i%50)
		e, err := event.Decode([]byte(raw), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		events[i] = e
	}
	return events
}

// BenchmarkBuildArrays measures encoding a 64-event flush as array parameters (small flushes).
func BenchmarkBuildArrays(b *testing.B) {
	events := flushOf(b, 64)
	b.ReportAllocs()
	for b.Loop() {
		rows := collapse(events)
		f := getFlush()
		for start := 0; start < len(rows); {
			end := start
			for end < len(rows) && rows[end].Type == rows[start].Type {
				end++
			}
			f.eventArrays(rows[start].Type, rows[start:end])
			start = end
		}
		_ = f.values()
		flushes.Put(f)
	}
}

// BenchmarkBuildProfiles measures the users and accounts parameters of the same flush (a third of
// its events are identify calls).
func BenchmarkBuildProfiles(b *testing.B) {
	rows := collapse(flushOf(b, 64))
	b.ReportAllocs()
	for b.Loop() {
		f := getFlush()
		f.queueProfiles(rows)
		_ = f.values()
		flushes.Put(f)
	}
}

// BenchmarkBuildCopyRows measures turning a 2000-event flush into COPY rows (large flushes).
func BenchmarkBuildCopyRows(b *testing.B) {
	events := flushOf(b, 2000)
	b.ReportAllocs()
	for b.Loop() {
		src := &stageRows{rows: collapse(events)}
		for src.Next() {
			if _, err := src.Values(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
