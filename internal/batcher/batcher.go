// Package batcher is segment-sink's group commit. Requests hand it their validated events and
// wait; flushers take whatever has accumulated and write it in one transaction, then answer
// every request in it. Under load many requests share one flush; when idle a lone event is
// written at once. The memory held by waiting events is bounded: past the bound, Submit refuses
// at once with event.ErrOverloaded instead of queueing without limit.
package batcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segment-sink/segment-sink/internal/event"
)

// Writer stores events in one transaction: all of them are committed, or none is. It returns
// how many left the database unchanged (redeliveries). Its errors wrap event.ErrUnstorable when
// the data itself was refused.
type Writer interface {
	Write(ctx context.Context, events []event.Event) (unchanged int, err error)
}

// Observer is told about every flush; metrics.Metrics satisfies it.
type Observer interface {
	Flushed(events, unchanged int, took time.Duration, err error)
}

// Config sizes the batcher. Every field but MaxWait and Logger must be set.
type Config struct {
	// MaxEvents caps the events in one flush. A single request larger than this is still
	// written whole, in a flush of its own.
	MaxEvents int
	// MaxWait is how long a flusher may wait for a batch to fill up to MaxEvents before writing
	// it. Zero writes as soon as a flusher is free: busy flushers are what make batches grow.
	MaxWait time.Duration
	// Flushers is how many flushes may run at once, each on its own database connection.
	Flushers int
	// JoinAt is how many events must wait before a flush starts while another one is running;
	// a flush starts for any event when none is running. 0 means 1. See DefaultJoinAt.
	JoinAt int
	// JoinWait bounds how long events wait for JoinAt: once the oldest has waited that long, a
	// flush starts anyway, so that a slow flush (a lock, a retry) holds nobody up. 0 means
	// DefaultJoinWait.
	JoinWait time.Duration
	// MaxPendingEvents and MaxPendingBytes bound the events held in memory, waiting or being
	// written.
	MaxPendingEvents int
	MaxPendingBytes  int64
	// FlushTimeout bounds one flush, retries included.
	FlushTimeout time.Duration
	Logger       *slog.Logger
	// Observer, if set, is told about every flush.
	Observer Observer
}

func (c *Config) validate() error {
	if c.MaxEvents < 1 || c.Flushers < 1 || c.MaxPendingEvents < 1 || c.MaxPendingBytes < 1 || c.FlushTimeout <= 0 {
		return fmt.Errorf("batcher: every size and timeout must be positive: %+v", *c)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.JoinWait <= 0 {
		c.JoinWait = DefaultJoinWait
	}
	return nil
}

// DefaultJoinAt is the JoinAt the sink runs with. Every flush has a fixed cost (in PostgreSQL
// about 300 µs, against 35 µs per event, measured on 2 cores); with every free flusher starting
// at once, a third of the flushes of single-event webhooks held one event. Measured with
// sinkbench (64 connections, single events, 2 flushers, runs alternated): 32 gave 8-9% more
// events/s than starting at once and 17% less PostgreSQL CPU per event; 16 gave 7%; 64, which
// is one flush at a time here, gave nothing. Requests of 32 events or more (batches, imports)
// still flush side by side as before.
const DefaultJoinAt = 32

// DefaultJoinWait is the JoinWait the sink runs with: a few typical flushes (3 ms each in that
// benchmark), so that it rarely cuts a join short, and little next to ACK_TIMEOUT when a flush
// is stuck.
const DefaultJoinWait = 10 * time.Millisecond

// Batcher groups the events of concurrent requests into flushes.
type Batcher struct {
	cfg Config
	w   Writer

	mu            sync.Mutex
	queue         []*request
	queuedEvents  int // in queue
	flushing      int // flushes running
	pendingEvents int // waiting or being written
	pendingBytes  int64
	closed        bool

	wake    chan struct{} // a request arrived; capacity 1
	closing chan struct{} // closed by Close
	done    sync.WaitGroup
}

type request struct {
	ctx    context.Context
	events []event.Event
	bytes  int64
	queued time.Time
	result chan error // capacity 1: a flusher never blocks on a request that gave up
}

// New starts the flushers. Close stops them.
func New(w Writer, cfg Config) (*Batcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Batcher{cfg: cfg, w: w, wake: make(chan struct{}, 1), closing: make(chan struct{})}
	for range cfg.Flushers {
		b.done.Go(b.flushLoop)
	}
	return b, nil
}

// Submit queues events and waits until they are committed, or until ctx ends. A nil error
// means every event is in the database. Errors wrap event.ErrOverloaded, event.ErrClosed,
// event.ErrUnstorable, event.ErrUnavailable, or are ctx's error; in the last case the events
// may still be written later, which a retry absorbs.
func (b *Batcher) Submit(ctx context.Context, events []event.Event) error {
	r := &request{ctx: ctx, events: events, queued: time.Now(), result: make(chan error, 1)}
	for i := range events {
		r.bytes += int64(events[i].Size)
	}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return event.ErrClosed
	case b.pendingEvents > 0 && (b.pendingEvents+len(events) > b.cfg.MaxPendingEvents ||
		b.pendingBytes+r.bytes > b.cfg.MaxPendingBytes):
		// An empty batcher takes any one request, however large, so that nothing is refused
		// for ever.
		b.mu.Unlock()
		return event.ErrOverloaded
	}
	b.pendingEvents += len(events)
	b.pendingBytes += r.bytes
	b.queue = append(b.queue, r)
	b.queuedEvents += len(events)
	b.mu.Unlock()
	b.signal()

	select {
	case err := <-r.result:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for commit: %w", ctx.Err())
	}
}

// Admit says, before a request's body is read, whether the memory budget can take a request of
// that many bytes now. It reserves nothing (Submit decides), but it lets an overloaded sink
// refuse at the cost of reading headers: refusing only after reading and decoding every body
// spent the CPU that the flushes needed, and under sustained overload the sink wrote almost
// nothing (measured: 20 events/s with 1024 connections of 100-event batches).
func (b *Batcher) Admit(bytes int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return event.ErrClosed
	case b.pendingEvents > 0 && (b.pendingEvents >= b.cfg.MaxPendingEvents || b.pendingBytes+bytes > b.cfg.MaxPendingBytes):
		return event.ErrOverloaded
	}
	return nil
}

// Pending returns the number and size of the events held in memory.
func (b *Batcher) Pending() (events int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pendingEvents, b.pendingBytes
}

// ReadyShare is how full the memory budget may be before Ready reports the sink as not ready,
// so that a load balancer sends new requests elsewhere before they would be refused.
const ReadyShare = 0.9

// Ready reports an error while the events held in memory fill more than ReadyShare of the
// budget, or once the batcher is closing.
func (b *Batcher) Ready(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return event.ErrClosed
	case float64(b.pendingEvents) > ReadyShare*float64(b.cfg.MaxPendingEvents):
		return fmt.Errorf("memory budget nearly full: %d of MAX_PENDING_EVENTS=%d events waiting", b.pendingEvents, b.cfg.MaxPendingEvents)
	case float64(b.pendingBytes) > ReadyShare*float64(b.cfg.MaxPendingBytes):
		return fmt.Errorf("memory budget nearly full: %d of MAX_PENDING_BYTES=%d bytes waiting", b.pendingBytes, b.cfg.MaxPendingBytes)
	}
	return nil
}

// Close refuses new events, writes every event already submitted, and returns when the last
// flush has finished.
func (b *Batcher) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.closing)
	}
	b.mu.Unlock()
	b.done.Wait()
}

func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *Batcher) flushLoop() {
	joinTimer := time.NewTimer(time.Hour)
	joinTimer.Stop()
	for {
		batch, ok := b.next(joinTimer)
		if !ok {
			return
		}
		b.flush(batch)
		b.release(batch)
	}
}

// next waits for requests and takes up to MaxEvents events' worth of them. It returns false
// once the batcher is closed and drained. joinTimer is the flusher's own, for waitForMore.
func (b *Batcher) next(joinTimer *time.Timer) ([]*request, bool) {
	for {
		b.mu.Lock()
		b.dropAbandoned()
		if len(b.queue) == 0 || b.waitForMore() {
			closed := b.closed && len(b.queue) == 0
			var joined <-chan time.Time
			if len(b.queue) > 0 {
				joinTimer.Reset(b.cfg.JoinWait - time.Since(b.queue[0].queued))
				joined = joinTimer.C
			}
			b.mu.Unlock()
			if closed {
				return nil, false
			}
			select {
			case <-b.wake:
			case <-b.closing:
			case <-joined:
			}
			joinTimer.Stop()
			continue
		}
		if wait := b.lingerFor(); wait > 0 {
			b.mu.Unlock()
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-b.closing:
			}
			timer.Stop()
			b.mu.Lock()
			b.dropAbandoned()
		}
		n, events := 0, 0
		for n < len(b.queue) && (n == 0 || events+len(b.queue[n].events) <= b.cfg.MaxEvents) {
			events += len(b.queue[n].events)
			n++
		}
		batch := make([]*request, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.queuedEvents -= events
		more := len(b.queue) > 0
		if n > 0 {
			b.flushing++
		}
		b.mu.Unlock()
		if more {
			b.signal() // another flusher can start on the rest
		}
		if len(batch) > 0 {
			return batch, true
		}
	}
}

// waitForMore says whether a free flusher should leave the queue to a running flush for now:
// while one runs, a second one starts only once JoinAt events wait, or once the oldest has
// waited JoinWait, so that the flushes that run side by side are worth their fixed cost. The
// running flusher takes the queue when it is done. b.mu must be held, and the queue not empty.
func (b *Batcher) waitForMore() bool {
	return b.flushing > 0 && !b.closed && b.queuedEvents < b.cfg.JoinAt &&
		time.Since(b.queue[0].queued) < b.cfg.JoinWait
}

// lingerFor says how long to wait for the queue to fill: only with MaxWait set, while the
// oldest request is younger than it, the queue is short of MaxEvents, and the batcher is open.
func (b *Batcher) lingerFor() time.Duration {
	if b.cfg.MaxWait <= 0 || b.closed {
		return 0
	}
	queued := 0
	for _, r := range b.queue {
		queued += len(r.events)
	}
	if queued >= b.cfg.MaxEvents {
		return 0
	}
	return b.cfg.MaxWait - time.Since(b.queue[0].queued)
}

// dropAbandoned removes requests whose sender gave up before their flush began: nobody waits
// for their answer, and the sender will retry. b.mu must be held.
func (b *Batcher) dropAbandoned() {
	kept := b.queue[:0]
	for _, r := range b.queue {
		if r.ctx.Err() != nil {
			b.queuedEvents -= len(r.events)
			b.pendingEvents -= len(r.events)
			b.pendingBytes -= r.bytes
			continue
		}
		kept = append(kept, r)
	}
	clear(b.queue[len(kept):])
	b.queue = kept
}

func (b *Batcher) release(batch []*request) {
	b.mu.Lock()
	b.flushing--
	for _, r := range batch {
		b.pendingEvents -= len(r.events)
		b.pendingBytes -= r.bytes
	}
	b.mu.Unlock()
}

// flush writes a batch and answers each request in it. When the database refuses the data
// itself, the batch is split in halves and each half written on its own, until the request
// that holds the bad event is alone: it gets the error, every other request is committed.
func (b *Batcher) flush(batch []*request) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.FlushTimeout)
	defer cancel()
	start := time.Now()
	unchanged, err := b.write(ctx, batch)
	took := time.Since(start)
	split := errors.Is(err, event.ErrUnstorable) && len(batch) > 1
	if b.cfg.Observer != nil && !split {
		// A batch that is split is observed through its halves, so that each event and each
		// refused one is counted once.
		b.cfg.Observer.Flushed(countEvents(batch), unchanged, took, err)
	}
	if b.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		b.cfg.Logger.Debug("flush", "requests", len(batch), "events", countEvents(batch), "unchanged", unchanged,
			"duration_ms", float64(took.Microseconds())/1000, "waited_ms",
			float64(start.Sub(batch[0].queued).Microseconds())/1000, "error", err)
	}
	if split {
		half := len(batch) / 2
		b.flush(batch[:half])
		b.flush(batch[half:])
		return
	}
	if err != nil {
		b.cfg.Logger.Error("flush failed", "requests", len(batch), "error", err)
	}
	for _, r := range batch {
		r.result <- err
	}
}

// write writes the batch's events, retrying failures that may pass (a dropped connection, a
// deadlock) while some request in the batch still waits for its answer.
func (b *Batcher) write(ctx context.Context, batch []*request) (unchanged int, err error) {
	events := batch[0].events
	if len(batch) > 1 {
		events = make([]event.Event, 0, countEvents(batch))
		for _, r := range batch {
			events = append(events, r.events...)
		}
	}
	backoff := 20 * time.Millisecond
	for {
		unchanged, err := b.w.Write(ctx, events)
		if err == nil || errors.Is(err, event.ErrUnstorable) || !anyWaiting(batch) {
			return unchanged, err
		}
		b.cfg.Logger.Warn("flush failed, retrying", "events", len(events), "error", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return 0, err
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func countEvents(batch []*request) int {
	n := 0
	for _, r := range batch {
		n += len(r.events)
	}
	return n
}

func anyWaiting(batch []*request) bool {
	for _, r := range batch {
		if r.ctx.Err() == nil {
			return true
		}
	}
	return false
}
