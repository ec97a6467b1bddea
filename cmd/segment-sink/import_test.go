package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/segment-sink/segment-sink/internal/dbtest"
)

// archive writes n archived events, as Segment's S3 export holds them, ids from start.
func archive(start, n int) []byte {
	var b bytes.Buffer
	for i := start; i < start+n; i++ {
		fmt.Fprintf(&b, `{"type":"track","messageId":"arch-%d","userId":"user-%d","event":"Order Completed","properties":{"revenue":%d},"receivedAt":"2024-04-01T10:00:00Z","timestamp":"2024-04-01T09:59:59Z"}`+"\n", i, i%7, i)
	}
	return b.Bytes()
}

func gzipped(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	for _, p := range parts {
		w.Write(p)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestImportLoadsArchivesIdempotently(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.New(t)
	dir := t.TempDir()
	bad := strings.Join([]string{
		`{"type":"track","userId":"u"}`, // line 2: no event
		`not json`,                      // line 3
		`{"type":"track","userId":"u","event":"E","properties":{"k":"\u0000"}}`, // line 4
	}, "\n")
	plain := append(append(archive(0, 1), []byte(bad+"\n\n")...), archive(1, 999)...) // 1000 good, 3 bad, 1 empty
	os.WriteFile(filepath.Join(dir, "2024-04-01.ndjson"), plain, 0o644)
	// Gzipped, with 500 events repeated from the plain file (an overlapping export) and 1500 new.
	os.MkdirAll(filepath.Join(dir, "more"), 0o755)
	os.WriteFile(filepath.Join(dir, "more", "part-0001.gz"), gzipped(t, archive(500, 500), archive(1000, 1500)), 0o644)
	env := map[string]string{"DATABASE_URL": dbURL}
	getenv := func(k string) string { return env[k] }

	var out, errOut lockedBuffer
	if err := run(context.Background(), []string{"import", dir}, getenv, &out, &errOut); err != nil {
		t.Fatalf("import: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"2 files", "3003 lines", "2500 stored", "500 duplicates", "3 rejected", "1 empty lines",
		"event: is required", `properties: contains \u0000`, "event must be a JSON object"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	for _, want := range []string{"2024-04-01.ndjson:2: event: is required", "2024-04-01.ndjson:3:", "2024-04-01.ndjson:4: properties"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, errOut.String())
		}
	}
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks`); got != 2500 {
		t.Errorf("tracks = %d, want 2500", got)
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id = 'arch-1234' AND user_id = 'user-2'
		AND (properties->>'revenue')::int = 1234 AND received_at = '2024-04-01T10:00:00Z'`); got != 1 {
		t.Errorf("an imported row is not as archived")
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM rejected_events WHERE path = 'import' AND error LIKE '%2024-04-01.ndjson:%'`); got != 3 {
		t.Errorf("quarantined lines = %d, want 3", got)
	}

	// Run again, as after an interruption: nothing new, nothing doubled.
	out = lockedBuffer{}
	if err := run(context.Background(), []string{"import", filepath.Join(dir, "*.ndjson"), filepath.Join(dir, "more")}, getenv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0 stored, 3000 duplicates") {
		t.Errorf("second run: %s", out.String())
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks`); got != 2500 {
		t.Errorf("tracks after a second run = %d, want 2500", got)
	}
}

func TestImportStrictStopsAtTheFirstInvalidLine(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.New(t)
	file := filepath.Join(t.TempDir(), "events.ndjson")
	os.WriteFile(file, append(archive(0, 10), []byte("{\"type\":\"page\"}\n")...), 0o644)
	var out lockedBuffer
	err := run(context.Background(), []string{"import", "--strict", file}, func(k string) string {
		return map[string]string{"DATABASE_URL": dbURL}[k]
	}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "events.ndjson:11: userId") {
		t.Errorf("import --strict = %v, want a stop at events.ndjson:11", err)
	}
}

func TestImportIsolatesARowPostgresRefuses(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.New(t)
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `ALTER TABLE tracks ADD CONSTRAINT not_42 CHECK (message_id <> 'arch-42')`); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "events.ndjson")
	os.WriteFile(file, archive(0, 100), 0o644)
	var out lockedBuffer
	if err := run(context.Background(), []string{"import", file}, func(k string) string {
		return map[string]string{"DATABASE_URL": dbURL}[k]
	}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks`); got != 99 {
		t.Errorf("tracks = %d, want 99: one refused row must not fail its batch", got)
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM rejected_events WHERE reason = 'unstorable' AND error LIKE '%events.ndjson:43:%'`); got != 1 {
		t.Errorf("the refused row is not quarantined with its line:\n%s", out.String())
	}

	// The fix, then a replay to a running sink: the line lands like a webhook event.
	if _, err := conn.Exec(context.Background(), `ALTER TABLE tracks DROP CONSTRAINT not_42`); err != nil {
		t.Fatal(err)
	}
	s := startSinkWith(t, map[string]string{"DATABASE_URL": dbURL, "LISTEN_ADDR": "127.0.0.1:0", "LOG_FORMAT": "text"})
	out = lockedBuffer{}
	if err := run(context.Background(), []string{"rejected", "replay", "--url", s.url}, func(k string) string {
		return map[string]string{"DATABASE_URL": dbURL}[k]
	}, &out, &out); err != nil {
		t.Fatalf("replay of an imported line: %v\n%s", err, out.String())
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id = 'arch-42'`); got != 1 {
		t.Errorf("the replayed line is not stored:\n%s", out.String())
	}
}

func TestImportAndRejectedValidateTheirSettings(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"import", "x.ndjson"}, {"rejected", "list"}} {
		err := run(context.Background(), args, func(string) string { return "" }, &lockedBuffer{}, &lockedBuffer{})
		if err == nil || !strings.Contains(err.Error(), "DATABASE_URL: is required") {
			t.Errorf("%v without DATABASE_URL = %v", args, err)
		}
		err = run(context.Background(), args, func(k string) string {
			return map[string]string{"DATABASE_URL": "postgres://x", "ACK_TIMEOUT": "9s"}[k]
		}, &lockedBuffer{}, &lockedBuffer{})
		if err == nil || !strings.Contains(err.Error(), "ACK_TIMEOUT") {
			t.Errorf("%v with a bad ACK_TIMEOUT = %v", args, err)
		}
	}
}
