package batcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segment-sink/segment-sink/internal/batcher"
	"github.com/segment-sink/segment-sink/internal/dbtest"
	"github.com/segment-sink/segment-sink/internal/event"
	"github.com/segment-sink/segment-sink/internal/store"
)

// gatedStore is the real store, with a gate that can hold writes back and a count of them.
type gatedStore struct {
	*store.Store
	gate   chan struct{} // closed: writes pass
	writes atomic.Int64
	events atomic.Int64
}

func (g *gatedStore) Write(ctx context.Context, events []event.Event) (int, error) {
	g.writes.Add(1)
	g.events.Add(int64(len(events)))
	select {
	case <-g.gate:
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %w", event.ErrUnavailable, ctx.Err())
	}
	return g.Store.Write(ctx, events)
}

func setup(t *testing.T, cfg batcher.Config) (*batcher.Batcher, *gatedStore, *pgx.Conn) {
	t.Helper()
	url := dbtest.New(t)
	s, err := store.Open(context.Background(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	g := &gatedStore{Store: s, gate: make(chan struct{})}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 1000
	}
	if cfg.Flushers == 0 {
		cfg.Flushers = 2
	}
	if cfg.MaxPendingEvents == 0 {
		cfg.MaxPendingEvents = 10_000
	}
	if cfg.MaxPendingBytes == 0 {
		cfg.MaxPendingBytes = 1 << 30
	}
	if cfg.FlushTimeout == 0 {
		cfg.FlushTimeout = 10 * time.Second
	}
	b, err := batcher.New(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.open()
		b.Close()
	})
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return b, g, conn
}

func (g *gatedStore) open() {
	select {
	case <-g.gate:
	default:
		close(g.gate)
	}
}

func track(t *testing.T, id string) event.Event {
	t.Helper()
	e, err := event.Decode(fmt.Appendf(nil, `{"type":"track","messageId":%q,"userId":"u","event":"E"}`, id), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func rows(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM tracks`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// submitAll submits n one-event requests concurrently and returns their errors once all answer.
func submitAll(t *testing.T, b *batcher.Batcher, prefix string, n int, ctx context.Context) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		e := track(t, fmt.Sprintf("%s%d", prefix, i))
		wg.Go(func() { errs[i] = b.Submit(ctx, []event.Event{e}) })
	}
	wg.Wait()
	return errs
}

func TestConcurrentRequestsShareFlushes(t *testing.T) {
	t.Parallel()
	b, g, conn := setup(t, batcher.Config{Flushers: 1})
	const n = 200
	done := make(chan []error)
	go func() { done <- submitAll(t, b, "m", n, context.Background()) }()
	// The first flush is held at the gate while the other requests queue up behind it.
	waitFor(t, "requests to queue", func() bool { p, _ := b.Pending(); return p == n })
	g.open()
	for i, err := range <-done {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if got := rows(t, conn); got != n {
		t.Errorf("rows = %d, want %d", got, n)
	}
	// One flush for the request that got there first, one for everything that queued behind it.
	if w := g.writes.Load(); w > 3 {
		t.Errorf("%d requests took %d flushes; group commit should need 2", n, w)
	}
	if p, bytes := b.Pending(); p != 0 || bytes != 0 {
		t.Errorf("pending after the flushes: %d events, %d bytes", p, bytes)
	}
}

// While a flush runs, a free flusher leaves a few waiting events to it and starts a flush of its
// own only once JoinAt events wait.
func TestASecondFlushWaitsForJoinAtEvents(t *testing.T) {
	t.Parallel()
	const joinAt = 5
	b, g, conn := setup(t, batcher.Config{Flushers: 2, JoinAt: joinAt, JoinWait: time.Minute})
	ctx := context.Background()
	errs := make(chan error, joinAt+1)
	submit := func(id string) {
		e := track(t, id)
		go func() { errs <- b.Submit(ctx, []event.Event{e}) }()
	}
	submit("first") // no flush runs: the first flusher takes it at once, and is held at the gate
	waitFor(t, "the first flush", func() bool { return g.writes.Load() == 1 })
	for i := range joinAt - 1 {
		submit(fmt.Sprint("m", i))
	}
	waitFor(t, "requests to queue", func() bool { p, _ := b.Pending(); return p == joinAt })
	time.Sleep(100 * time.Millisecond)
	if w := g.writes.Load(); w != 1 {
		t.Fatalf("%d events waiting, fewer than JoinAt=%d, started a second flush (%d flushes)", joinAt-1, joinAt, w)
	}
	submit("last")
	waitFor(t, "a second flush once JoinAt events wait", func() bool { return g.writes.Load() == 2 })
	g.open()
	for range joinAt + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got, w := rows(t, conn), g.writes.Load(); got != joinAt+1 || w != 2 {
		t.Errorf("rows = %d in %d flushes, want %d in 2", got, w, joinAt+1)
	}
}

// A flush that does not finish (a lock, a retry) holds the events waiting for JoinAt no longer
// than JoinWait: then a second flush starts for them.
func TestJoinWaitBoundsTheWaitBehindASlowFlush(t *testing.T) {
	t.Parallel()
	const joinWait = 200 * time.Millisecond
	b, g, conn := setup(t, batcher.Config{Flushers: 2, JoinAt: 1000, JoinWait: joinWait})
	held := make(chan error, 1)
	go func() { held <- b.Submit(context.Background(), []event.Event{track(t, "held")}) }()
	waitFor(t, "the first flush", func() bool { return g.writes.Load() == 1 })
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- b.Submit(context.Background(), []event.Event{track(t, "behind")}) }()
	waitFor(t, "a second flush", func() bool { return g.writes.Load() == 2 })
	if waited := time.Since(start); waited < joinWait*3/4 {
		t.Errorf("the second flush started after %s, before JoinWait (%s)", waited, joinWait)
	}
	g.open()
	for _, ch := range []chan error{held, done} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if got := rows(t, conn); got != 2 {
		t.Errorf("rows = %d, want 2", got)
	}
}

// When no flush runs, one event is written at once, however large JoinAt is.
func TestALoneEventIgnoresJoinAt(t *testing.T) {
	t.Parallel()
	b, g, conn := setup(t, batcher.Config{Flushers: 2, JoinAt: 1000})
	g.open()
	for i := range 3 {
		if err := b.Submit(context.Background(), []event.Event{track(t, fmt.Sprint("m", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if got, w := rows(t, conn), g.writes.Load(); got != 3 || w != 3 {
		t.Errorf("rows = %d in %d flushes, want 3 in 3", got, w)
	}
}

func TestFlushesAreCappedAtMaxEvents(t *testing.T) {
	t.Parallel()
	b, g, conn := setup(t, batcher.Config{Flushers: 1, MaxEvents: 10})
	g.open()
	done := make(chan []error)
	go func() { done <- submitAll(t, b, "m", 95, context.Background()) }()
	for _, err := range <-done {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := rows(t, conn); got != 95 {
		t.Errorf("rows = %d", got)
	}
	if w, e := g.writes.Load(), g.events.Load(); w < 10 || e != 95 {
		t.Errorf("%d flushes of %d events in all; want at least 10 flushes of at most 10", w, e)
	}
	// A request larger than MaxEvents is still written, whole, in one flush.
	big := make([]event.Event, 25)
	for i := range big {
		big[i] = track(t, fmt.Sprint("big", i))
	}
	if err := b.Submit(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	if got := rows(t, conn); got != 120 {
		t.Errorf("rows = %d, want 120", got)
	}
}

func TestMaxWaitGathersABatch(t *testing.T) {
	t.Parallel()
	b, g, _ := setup(t, batcher.Config{Flushers: 1, MaxWait: 300 * time.Millisecond})
	g.open()
	errs := submitAll(t, b, "m", 20, context.Background())
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if w := g.writes.Load(); w != 1 {
		t.Errorf("20 requests arriving within MaxWait took %d flushes, want 1", w)
	}
}

func TestAnUnstorableEventFailsOnlyItsOwnRequest(t *testing.T) {
	t.Parallel()
	b, g, conn := setup(t, batcher.Config{Flushers: 1})
	const n = 40
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		e := track(t, fmt.Sprint("m", i))
		if i == 17 {
			// Validation keeps such text out; forced in here to stand for any event that
			// PostgreSQL refuses.
			e.Properties = json.RawMessage(`{"k":"\u0000"}`)
		}
		wg.Go(func() { errs[i] = b.Submit(context.Background(), []event.Event{e}) })
	}
	waitFor(t, "requests to queue", func() bool { p, _ := b.Pending(); return p == n })
	g.open()
	wg.Wait()
	for i, err := range errs {
		if i == 17 {
			if !errors.Is(err, event.ErrUnstorable) {
				t.Errorf("the poison request got %v, want ErrUnstorable", err)
			}
		} else if err != nil {
			t.Errorf("request %d, flushed with the poison one, got %v", i, err)
		}
	}
	if got := rows(t, conn); got != n-1 {
		t.Errorf("rows = %d, want %d", got, n-1)
	}
}

func TestMemoryBoundRefusesAtOnce(t *testing.T) {
	t.Parallel()
	b, g, conn := setup(t, batcher.Config{Flushers: 1, MaxPendingEvents: 10})
	done := make(chan []error)
	go func() { done <- submitAll(t, b, "m", 10, context.Background()) }()
	waitFor(t, "the budget to fill", func() bool { p, _ := b.Pending(); return p == 10 })
	if err := b.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "MAX_PENDING_EVENTS") {
		t.Errorf("Ready with a full budget = %v, want an error naming MAX_PENDING_EVENTS", err)
	}

	start := time.Now()
	err := b.Submit(context.Background(), []event.Event{track(t, "over")})
	if !errors.Is(err, event.ErrOverloaded) {
		t.Fatalf("Submit past the budget = %v, want ErrOverloaded", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("refusal took %s; it must not wait", d)
	}

	g.open()
	for _, err := range <-done {
		if err != nil {
			t.Errorf("a request within the budget: %v", err)
		}
	}
	if got := rows(t, conn); got != 10 {
		t.Errorf("rows = %d, want 10", got)
	}
	// Room again once the flush is done.
	if err := b.Ready(context.Background()); err != nil {
		t.Errorf("Ready after the flush: %v", err)
	}
	if err := b.Submit(context.Background(), []event.Event{track(t, "after")}); err != nil {
		t.Errorf("Submit after the flush: %v", err)
	}
}

// Admit answers from the headers alone whether a request of that size fits the budget now.
func TestAdmitChecksTheBudgetBeforeABodyIsRead(t *testing.T) {
	t.Parallel()
	e := track(t, "held")
	b, g, _ := setup(t, batcher.Config{MaxPendingEvents: 10, MaxPendingBytes: int64(e.Size) + 1000})
	if err := b.Admit(1 << 30); err != nil {
		t.Errorf("an empty batcher refused a request: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Submit(context.Background(), []event.Event{e}) }()
	waitFor(t, "the event to be held", func() bool { p, _ := b.Pending(); return p == 1 })
	if err := b.Admit(500); err != nil {
		t.Errorf("a 500-byte request refused with room for it: %v", err)
	}
	if err := b.Admit(5000); !errors.Is(err, event.ErrOverloaded) {
		t.Errorf("Admit(5000) past the budget = %v, want ErrOverloaded", err)
	}
	g.open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := b.Admit(1); !errors.Is(err, event.ErrClosed) {
		t.Errorf("Admit after Close = %v, want ErrClosed", err)
	}
}

func TestByteBudget(t *testing.T) {
	t.Parallel()
	e := track(t, "x")
	b, _, _ := setup(t, batcher.Config{Flushers: 1, MaxPendingBytes: int64(e.Size)*3 - 1})
	done := make(chan error, 2)
	for i := range 2 {
		go func() { done <- b.Submit(context.Background(), []event.Event{track(t, fmt.Sprint("b", i))}) }()
	}
	waitFor(t, "two events to wait", func() bool { p, _ := b.Pending(); return p == 2 })
	if err := b.Submit(context.Background(), []event.Event{track(t, "third")}); !errors.Is(err, event.ErrOverloaded) {
		t.Errorf("a third event past the byte budget = %v, want ErrOverloaded", err)
	}
}

func TestARequestThatGivesUpIsAnsweredByItsDeadline(t *testing.T) {
	t.Parallel()
	b, g, conn := setup(t, batcher.Config{Flushers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Submit(ctx, []event.Event{track(t, "late")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit with a stuck database = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("answered after %s", d)
	}
	g.open()
	// Nothing is lost either way: the sender retries, and the upsert absorbs a late write.
	if err := b.Submit(context.Background(), []event.Event{track(t, "late")}); err != nil {
		t.Fatal(err)
	}
	if got := rows(t, conn); got != 1 {
		t.Errorf("rows = %d, want 1", got)
	}
}

func TestCloseWritesEverythingAcceptedThenRefuses(t *testing.T) {
	t.Parallel()
	b, g, conn := setup(t, batcher.Config{Flushers: 2})
	done := make(chan []error)
	go func() { done <- submitAll(t, b, "m", 50, context.Background()) }()
	waitFor(t, "requests to queue", func() bool { p, _ := b.Pending(); return p == 50 })
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	waitFor(t, "Close to begin", func() bool {
		// A probe that lands before Close gives up quickly; the count below leaves it out.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		return errors.Is(b.Submit(ctx, []event.Event{track(t, "probe")}), event.ErrClosed)
	})
	g.open()
	<-closed
	for _, err := range <-done {
		if err != nil {
			t.Errorf("request accepted before Close: %v", err)
		}
	}
	var got int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM tracks WHERE message_id LIKE 'm%'`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 50 {
		t.Errorf("rows = %d, want 50", got)
	}
}
