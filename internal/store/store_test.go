package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segment-sink/segment-sink/internal/dbtest"
	"github.com/segment-sink/segment-sink/internal/event"
	"github.com/segment-sink/segment-sink/internal/store"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// writePaths are the two ways Write sends rows: array parameters for small flushes, COPY for
// large ones. Tests of Write run on both.
var writePaths = []struct {
	name string
	opts store.Options
}{
	{"arrays", store.Options{CopyThreshold: 1 << 30}},
	{"copy", store.Options{CopyThreshold: 1}},
}

// bothPaths runs test once per write path, each on a fresh database.
func bothPaths(t *testing.T, test func(t *testing.T, s *store.Store, conn *pgx.Conn)) {
	for _, p := range writePaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			s, conn := openWith(t, p.opts)
			test(t, s, conn)
		})
	}
}

func open(t *testing.T) (*store.Store, *pgx.Conn) {
	t.Helper()
	return openWith(t, store.Options{})
}

func openWith(t testing.TB, opts store.Options) (*store.Store, *pgx.Conn) {
	t.Helper()
	url := dbtest.New(t)
	ctx := context.Background()
	s, err := store.Open(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return s, conn
}

func decode(t *testing.T, raw string) event.Event {
	t.Helper()
	e, err := event.Decode([]byte(raw), t0)
	if err != nil {
		t.Fatalf("Decode(%s): %v", raw, err)
	}
	return e
}

func count(t *testing.T, conn *pgx.Conn, query string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestWriteEveryTypeIntoItsTable(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		events := []event.Event{
			decode(t, `{"type":"track","messageId":"t1","userId":"u1","event":"Signed Up","properties":{"plan":"pro"},"context":{"ip":"1.2.3.4"},"integrations":{"All":false},"originalTimestamp":"2024-05-01T10:00:00Z","sentAt":"2024-05-01T10:00:01Z","channel":"server"}`),
			decode(t, `{"type":"identify","messageId":"i1","anonymousId":"a1","traits":{"email":"x@y.z"}}`),
			decode(t, `{"type":"page","messageId":"p1","userId":"u1","name":"Home","category":"Site","properties":{"path":"/"}}`),
			decode(t, `{"type":"screen","messageId":"s1","userId":"u1","name":"Feed","category":"App","properties":{"n":1}}`),
			decode(t, `{"type":"group","messageId":"g1","userId":"u1","groupId":"acme","traits":{"employees":10}}`),
			decode(t, `{"type":"alias","messageId":"al1","userId":"u1","previousId":"a1"}`),
		}
		if _, err := s.Write(context.Background(), events); err != nil {
			t.Fatalf("Write: %v", err)
		}

		var (
			userID, anonID, name, extra, props, ctxJSON, integ string
			ts, ots, sent, recv                                time.Time
		)
		err := conn.QueryRow(context.Background(), `SELECT user_id, coalesce(anonymous_id, 'NULL'), event, extra::text,
		properties::text, context::text, integrations::text, "timestamp", original_timestamp, sent_at, received_at
		FROM tracks WHERE message_id = 't1'`).Scan(&userID, &anonID, &name, &extra, &props, &ctxJSON, &integ, &ts, &ots, &sent, &recv)
		if err != nil {
			t.Fatal(err)
		}
		if userID != "u1" || anonID != "NULL" || name != "Signed Up" || extra != `{"channel": "server"}` ||
			props != `{"plan": "pro"}` || ctxJSON != `{"ip": "1.2.3.4"}` || integ != `{"All": false}` {
			t.Errorf("tracks row: %q %q %q %q %q %q %q", userID, anonID, name, extra, props, ctxJSON, integ)
		}
		// receivedAt is the server clock (t0); timestamp corrects the one-second skew.
		if !recv.Equal(t0) || !ts.Equal(t0.Add(-time.Second)) || !ots.Equal(t0.Add(-2*time.Hour)) || !sent.Equal(t0.Add(-2*time.Hour+time.Second)) {
			t.Errorf("tracks times: timestamp %s original %s sent %s received %s", ts, ots, sent, recv)
		}

		checks := []struct {
			query string
			want  int
		}{
			{`SELECT count(*) FROM identifies WHERE message_id = 'i1' AND anonymous_id = 'a1' AND user_id IS NULL AND traits->>'email' = 'x@y.z'`, 1},
			{`SELECT count(*) FROM pages WHERE message_id = 'p1' AND name = 'Home' AND category = 'Site' AND properties->>'path' = '/'`, 1},
			{`SELECT count(*) FROM screens WHERE message_id = 's1' AND name = 'Feed' AND category = 'App' AND properties->>'n' = '1'`, 1},
			{`SELECT count(*) FROM groups WHERE message_id = 'g1' AND group_id = 'acme' AND traits->>'employees' = '10'`, 1},
			{`SELECT count(*) FROM aliases WHERE message_id = 'al1' AND user_id = 'u1' AND previous_id = 'a1'`, 1},
			{`SELECT (SELECT count(*) FROM tracks) + (SELECT count(*) FROM identifies) + (SELECT count(*) FROM pages)
			+ (SELECT count(*) FROM screens) + (SELECT count(*) FROM groups) + (SELECT count(*) FROM aliases)`, 6},
		}
		for _, c := range checks {
			if got := count(t, conn, c.query); got != c.want {
				t.Errorf("%s = %d, want %d", c.query, got, c.want)
			}
		}
	})
}

// The store encodes timestamps itself (PostgreSQL's binary format counts microseconds from
// 2000): times on either side of that epoch, at the ends of the accepted range and with
// sub-microsecond digits read back as PostgreSQL stores them, to the microsecond.
func TestTimestampsAtTheEdgesReadBackExactly(t *testing.T) {
	t.Parallel()
	stamps := []string{"0001-01-01T00:00:01Z", "1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00.000001Z",
		"1999-12-31T23:59:59.999999Z", "2000-01-01T00:00:00Z", "2000-01-01T00:00:00.0000019Z",
		"2024-05-01T10:00:00.123456789+05:30", "9999-12-31T23:59:59.999999Z"}
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		var events []event.Event
		for i, ts := range stamps {
			events = append(events, decode(t, fmt.Sprintf(`{"type":"track","messageId":"m%d","userId":"u","event":"E","timestamp":%q,"sentAt":%[2]q}`, i, ts)),
				// users' first and last seen times are encoded by the store on both write paths.
				decode(t, fmt.Sprintf(`{"type":"identify","messageId":"i%d","userId":"u%[1]d","timestamp":%q}`, i, ts)))
		}
		if _, err := s.Write(context.Background(), events); err != nil {
			t.Fatal(err)
		}
		for i, ts := range stamps {
			want, _ := time.Parse(time.RFC3339Nano, ts)
			want = want.Truncate(time.Microsecond)
			var got, sent time.Time
			if err := conn.QueryRow(context.Background(), `SELECT "timestamp", sent_at FROM tracks WHERE message_id = $1`,
				fmt.Sprint("m", i)).Scan(&got, &sent); err != nil {
				t.Fatal(err)
			}
			if !got.Equal(want) || !sent.Equal(want) {
				t.Errorf("%s read back as timestamp %s, sent_at %s; want %s", ts, got.UTC(), sent.UTC(), want.UTC())
			}
			var first, last time.Time
			if err := conn.QueryRow(context.Background(), `SELECT first_seen_at, last_seen_at FROM users WHERE user_id = $1`,
				fmt.Sprint("u", i)).Scan(&first, &last); err != nil {
				t.Fatal(err)
			}
			if !first.Equal(want) || !last.Equal(want) {
				t.Errorf("%s read back as first_seen_at %s, last_seen_at %s; want %s", ts, first.UTC(), last.UTC(), want.UTC())
			}
		}
	})
}

// Statements are prepared once per connection. When the server forgets them (DEALLOCATE ALL,
// DISCARD ALL: an administrator, a connection pooler), one write fails and the next prepares
// them again.
func TestWritesRecoverWhenTheConnectionForgetsItsStatements(t *testing.T) {
	t.Parallel()
	for _, p := range writePaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			opts := p.opts
			opts.MaxConns = 1 // one session, the one DEALLOCATE ALL runs on
			s, conn := openWith(t, opts)
			ctx := context.Background()
			write := func(id string) error {
				_, err := s.Write(ctx, []event.Event{decode(t, fmt.Sprintf(`{"type":"track","messageId":%q,"userId":"u","event":"E"}`, id))})
				return err
			}
			if err := write("before"); err != nil {
				t.Fatal(err)
			}
			if err := s.Exec(ctx, "DEALLOCATE ALL"); err != nil {
				t.Fatal(err)
			}
			failures := 0
			for i := range 3 {
				if err := write(fmt.Sprint("after", i)); err != nil {
					if !errors.Is(err, event.ErrUnavailable) || !strings.Contains(err.Error(), "upsert tracks") {
						t.Errorf("write after DEALLOCATE ALL: %v; want an unavailable error naming the statement", err)
					}
					failures++
				}
			}
			if failures > 1 {
				t.Errorf("%d of 3 writes failed after DEALLOCATE ALL; the statements must be prepared again after one", failures)
			}
			if got := count(t, conn, `SELECT count(*) FROM tracks`); got != 4-failures {
				t.Errorf("rows = %d, want %d", got, 4-failures)
			}
		})
	}
}

func TestWriteCollapsesDuplicatesInOneBatchLastWins(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		events := []event.Event{
			decode(t, `{"type":"track","messageId":"m","userId":"u","event":"First"}`),
			decode(t, `{"type":"track","messageId":"m","userId":"u","event":"Second"}`),
			decode(t, `{"type":"page","messageId":"m","userId":"u"}`), // same id, other table: its own row
			decode(t, `{"type":"track","messageId":"n","userId":"u","event":"Other"}`),
		}
		if _, err := s.Write(context.Background(), events); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if got := count(t, conn, `SELECT count(*) FROM tracks WHERE message_id = 'm' AND event = 'Second'`); got != 1 {
			t.Errorf("last of the duplicates stored %d times, want 1", got)
		}
		if got := count(t, conn, `SELECT count(*) FROM tracks`); got != 2 {
			t.Errorf("tracks rows = %d, want 2", got)
		}
		if got := count(t, conn, `SELECT count(*) FROM pages WHERE message_id = 'm'`); got != 1 {
			t.Errorf("pages rows = %d, want 1", got)
		}
	})
}

func TestRedeliveryDoesNotRewriteButChangeDoes(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		ctx := context.Background()
		original := `{"type":"identify","messageId":"m","userId":"u","traits":{"a":1}}`
		if _, err := s.Write(ctx, []event.Event{decode(t, original)}); err != nil {
			t.Fatal(err)
		}
		loadedAt := func() (time.Time, int64) {
			var at time.Time
			var xmin int64
			if err := conn.QueryRow(ctx, `SELECT loaded_at, xmin::text::bigint FROM identifies WHERE message_id = 'm'`).Scan(&at, &xmin); err != nil {
				t.Fatal(err)
			}
			return at, xmin
		}
		at1, x1 := loadedAt()

		// The very same event again: neither its row nor the user's is rewritten.
		if _, err := s.Write(ctx, []event.Event{decode(t, original)}); err != nil {
			t.Fatal(err)
		}
		if got := count(t, conn, `SELECT count(*) FROM users WHERE user_id = 'u' AND xmin::text::bigint = $1`, x1); got != 1 {
			t.Errorf("an identical redelivery rewrote the users row")
		}

		// A redelivery, even sent later with another sentAt and received at another time, is the
		// same event: the row is not touched.
		retry, err := event.Decode([]byte(`{"type":"identify","messageId":"m","userId":"u","traits":{"a":1},"sentAt":"2024-05-01T12:00:00Z"}`), t0.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(ctx, []event.Event{retry}); err != nil {
			t.Fatal(err)
		}
		if at2, x2 := loadedAt(); !at2.Equal(at1) || x2 != x1 {
			t.Errorf("identical redelivery rewrote the row: loaded_at %s -> %s, xmin %d -> %d", at1, at2, x1, x2)
		}

		if _, err := s.Write(ctx, []event.Event{decode(t, `{"type":"identify","messageId":"m","userId":"u","traits":{"a":2}}`)}); err != nil {
			t.Fatal(err)
		}
		if got := count(t, conn, `SELECT count(*) FROM identifies WHERE message_id = 'm' AND traits->>'a' = '2'`); got != 1 {
			t.Errorf("a changed redelivery did not update the row")
		}
		if _, x3 := loadedAt(); x3 == x1 {
			t.Errorf("a changed redelivery left xmin at %d", x3)
		}
	})
}

func TestWriteCountsUnchangedEvents(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		ctx := context.Background()
		a := decode(t, `{"type":"track","messageId":"a","userId":"u","event":"E"}`)
		b := decode(t, `{"type":"page","messageId":"b","userId":"u"}`)
		if n, err := s.Write(ctx, []event.Event{a, b}); err != nil || n != 0 {
			t.Fatalf("first write: %d unchanged, %v; want 0", n, err)
		}
		changed := decode(t, `{"type":"page","messageId":"b","userId":"u","name":"Now named"}`)
		fresh := decode(t, `{"type":"identify","messageId":"c","userId":"u"}`)
		// a again (unchanged), a twice in the flush (collapsed), b changed, c new.
		n, err := s.Write(ctx, []event.Event{a, a, changed, fresh})
		if err != nil || n != 2 {
			t.Errorf("second write: %d unchanged, %v; want 2 (both copies of a)", n, err)
		}
		if got := count(t, conn, `SELECT count(*) FROM pages WHERE message_id = 'b' AND name = 'Now named'`); got != 1 {
			t.Errorf("the changed event was not written")
		}
	})
}

func TestConcurrentWritesOfTheSameMessagesNeitherFailNorDuplicate(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		// Each writer sends the same 200 ids in a different order: without ordered inserts, two
		// transactions would lock the rows in opposite orders and deadlock.
		const writers, ids = 6, 200
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				events := make([]event.Event, 0, ids)
				for i := range ids {
					id := (i*(w+1) + w) % ids
					events = append(events, decode(t, fmt.Sprintf(`{"type":"track","messageId":"m%d","userId":"u","event":"E"}`, id)))
				}
				_, err := s.Write(context.Background(), events)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("Write: %v", err)
			}
		}
		if got := count(t, conn, `SELECT count(*) FROM tracks`); got != ids {
			t.Errorf("rows = %d, want %d", got, ids)
		}
	})
}

func TestWriteClassifiesErrors(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		ctx := context.Background()

		// Validation keeps such text out; here it is forced in to see how the store reports it.
		bad := decode(t, `{"type":"track","messageId":"bad","userId":"u","event":"E"}`)
		bad.Properties = json.RawMessage(`{"k":"\u0000"}`)
		good := decode(t, `{"type":"track","messageId":"good","userId":"u","event":"E"}`)
		_, err := s.Write(ctx, []event.Event{good, bad})
		if !errors.Is(err, event.ErrUnstorable) {
			t.Errorf("Write with NUL in jsonb: %v, want ErrUnstorable", err)
		}
		if got := count(t, conn, `SELECT count(*) FROM tracks`); got != 0 {
			t.Errorf("a failed write left %d rows", got)
		}

		// The connection is still usable after the failure: the staging table was left empty.
		if _, err := s.Write(ctx, []event.Event{good}); err != nil {
			t.Fatalf("Write after a failure: %v", err)
		}
		if got := count(t, conn, `SELECT count(*) FROM tracks`); got != 1 {
			t.Errorf("rows = %d, want 1", got)
		}

		canceled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Write(canceled, []event.Event{good}); !errors.Is(err, event.ErrUnavailable) {
			t.Errorf("Write with a canceled context: %v, want ErrUnavailable", err)
		}
	})
}

func TestReadyAndMigrations(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready on a migrated database: %v", err)
	}
	if err := s.MigrateDown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err == nil {
		t.Error("Ready with a pending migration: nil error")
	}
	if n, err := s.MigrateUp(ctx); err != nil || n != 1 {
		t.Fatalf("MigrateUp = %d, %v; want 1 applied", n, err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Errorf("Ready after migrating up again: %v", err)
	}
}

func TestOpenReportsBadURLWithoutLeakingIt(t *testing.T) {
	t.Parallel()
	_, err := store.Open(context.Background(), "postgres://user:s3cret@127.0.0.1:1/db?sslmode=disable&connect_timeout=bogus", store.Options{})
	if err == nil {
		t.Fatal("Open with a malformed URL: nil error")
	}
	_, err = store.Open(context.Background(), "postgres://user:s3cret@127.0.0.1:1/db?sslmode=disable", store.Options{})
	if err == nil {
		t.Fatal("Open with nothing listening: nil error")
	}
	if got := err.Error(); strings.Contains(got, "s3cret") {
		t.Errorf("error leaks the password: %s", got)
	}
}

func TestPruneRejectedKeepsTheRecent(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	now := time.Now()
	err := s.Quarantine(ctx, []event.Rejection{
		{ReceivedAt: now.Add(-10 * 24 * time.Hour), Path: "/webhook", Status: 400, Reason: "invalid", Error: "old", Index: -1, Body: []byte("\x00old")},
		{ReceivedAt: now, Path: "/webhook", Status: 400, Reason: "invalid", Error: "new", Index: 2, Body: []byte("\x00new")},
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneRejected(ctx, 7*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("PruneRejected = %d, %v; want 1", n, err)
	}
	kept, err := s.Rejected(ctx, store.RejectedFilter{Limit: 10})
	if err != nil || len(kept) != 1 || string(kept[0].Rejection.Body) != "\x00new" || kept[0].Rejection.Index != 2 {
		t.Errorf("kept = %+v, %v", kept, err)
	}
	if got := count(t, conn, `SELECT count(*) FROM rejected_events`); got != 1 {
		t.Errorf("rows = %d", got)
	}
}

func TestUsersAndAccountsKeepTheNewestTraits(t *testing.T) {
	t.Parallel()
	bothPaths(t, func(t *testing.T, s *store.Store, conn *pgx.Conn) {
		ctx := context.Background()
		write := func(raws ...string) {
			t.Helper()
			events := make([]event.Event, len(raws))
			for i, raw := range raws {
				events[i] = decode(t, raw)
			}
			if _, err := s.Write(ctx, events); err != nil {
				t.Fatal(err)
			}
		}
		write(
			`{"type":"identify","userId":"ada","timestamp":"2024-05-02T00:00:00Z","traits":{"plan":"pro","email":"ada@new.example"}}`,
			`{"type":"track","userId":"ada","event":"Login","timestamp":"2024-05-03T00:00:00Z"}`,
			`{"type":"group","userId":"ada","groupId":"acme","timestamp":"2024-05-02T00:00:00Z","traits":{"plan":"enterprise"}}`,
		)
		// Late and older: only the trait nobody set since is taken; the times widen (users span
		// identify calls, accounts group calls).
		write(
			`{"type":"identify","userId":"ada","timestamp":"2024-05-01T00:00:00Z","traits":{"plan":"free","email":"ada@old.example","name":"Ada"}}`,
			`{"type":"group","userId":"bob","groupId":"acme","timestamp":"2024-04-30T00:00:00Z","traits":{"plan":"trial","employees":5}}`,
		)
		// Two identifies of one user in one flush, newest last and first.
		write(
			`{"type":"identify","userId":"cy","timestamp":"2024-05-05T00:00:00Z","traits":{"plan":"b"}}`,
			`{"type":"identify","userId":"cy","timestamp":"2024-05-04T00:00:00Z","traits":{"plan":"a","x":1}}`,
		)
		checks := []struct {
			query string
			want  int
		}{
			{`SELECT count(*) FROM users WHERE user_id = 'ada' AND traits = '{"plan":"pro","email":"ada@new.example","name":"Ada"}'
				AND first_seen_at = '2024-05-01T00:00:00Z' AND last_seen_at = '2024-05-02T00:00:00Z'`, 1},
			// bob only joined a group: an account's member, not an identified user.
			{`SELECT count(*) FROM users WHERE user_id = 'bob'`, 0},
			{`SELECT count(*) FROM users WHERE user_id = 'cy' AND traits = '{"plan":"b","x":1}'`, 1},
			{`SELECT count(*) FROM accounts WHERE group_id = 'acme' AND traits = '{"plan":"enterprise","employees":5}'
				AND first_seen_at = '2024-04-30T00:00:00Z' AND last_seen_at = '2024-05-02T00:00:00Z'`, 1},
			{`SELECT count(*) FROM users`, 2},
		}
		for _, c := range checks {
			if got := count(t, conn, c.query); got != c.want {
				var dump string
				conn.QueryRow(ctx, `SELECT json_agg(u)::text FROM (SELECT * FROM users UNION ALL SELECT * FROM accounts) u`).Scan(&dump)
				t.Errorf("%s = %d, want %d\n%s", c.query, got, c.want, dump)
			}
		}
	})
}
