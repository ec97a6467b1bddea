// Package backfill loads archived Segment events: newline-delimited JSON, gzipped or not, one
// event per line, as Segment's S3/GCS archives and exports hold them. Each line is validated with
// the server's rules and written through the same storage path (COPY + upsert on messageId, in
// large batches), so an interrupted import can simply be run again.
package backfill

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segment-sink/segment-sink/internal/event"
)

// Writer stores events in one transaction and returns how many changed nothing; the store
// satisfies it.
type Writer interface {
	Write(ctx context.Context, events []event.Event) (unchanged int, err error)
}

// Quarantiner keeps refused lines; the store satisfies it.
type Quarantiner interface {
	Quarantine(ctx context.Context, rejections []event.Rejection) error
}

// MaxLineBytes bounds one line: an archived event is at most a few kilobytes (Segment caps
// events at 32 KB), so a longer line is refused rather than read into memory.
const MaxLineBytes = 1 << 20

// Options tune an import. Zero values take the defaults noted.
type Options struct {
	// BatchSize is how many events go into one transaction (default 2000).
	BatchSize int
	// Writers is how many batches are written at once (default 2).
	Writers int
	// Strict stops at the first invalid line instead of reporting it and going on.
	Strict bool
	// Quarantine, if set, keeps every invalid line in rejected_events.
	Quarantine Quarantiner
	// OnRejected, if set, is told about every invalid line.
	OnRejected func(Rejected)
	// OnProgress, if set, is told after every batch is written.
	OnProgress func(Progress)
	// Now is the clock for events without receivedAt (default time.Now).
	Now func() time.Time
}

// Source is one input: a file, or standard input.
type Source struct {
	Name string
	Size int64 // bytes on disk (compressed), 0 when unknown
	Open func() (io.ReadCloser, error)
}

// Progress is how far an import has come.
type Progress struct {
	Bytes, Lines, Stored, Duplicates, Rejected int64
}

// Rejected is an invalid line.
type Rejected struct {
	Source string
	Line   int64
	Reason string // "field: why"
}

// Summary is the outcome of an import.
type Summary struct {
	Files                                   int
	Bytes, Lines, Stored, Duplicates, Empty int64
	Rejected                                int64
	// ByReason counts invalid lines by what was wrong ("event: is required").
	ByReason map[string]int64
}

// Sources expands paths into inputs: files, globs, and directories (every regular file below
// them, in name order); "-" is standard input.
func Sources(paths []string, stdin io.Reader) ([]Source, error) {
	var out []Source
	for _, p := range paths {
		if p == "-" {
			out = append(out, Source{Name: "stdin", Open: func() (io.ReadCloser, error) { return io.NopCloser(stdin), nil }})
			continue
		}
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s: no such file", p)
		}
		for _, m := range matches {
			err := filepath.WalkDir(m, func(path string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return err
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				out = append(out, Source{Name: path, Size: info.Size(), Open: func() (io.ReadCloser, error) { return os.Open(path) }})
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", m, err)
			}
		}
	}
	return out, nil
}

// line is a decoded line waiting for its batch.
type line struct {
	source string
	number int64
	raw    []byte
}

type batch struct {
	events []event.Event
	lines  []line
}

// importer holds one run's state.
type importer struct {
	w    Writer
	opts Options

	bytes, lines, stored, duplicates, rejected, empty atomic.Int64

	mu       sync.Mutex
	byReason map[string]int64
}

// Run imports every source in order and returns what happened. A database error stops it (run
// it again: nothing is duplicated); so does an invalid line with Options.Strict.
func Run(ctx context.Context, sources []Source, w Writer, opts Options) (Summary, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 2000
	}
	if opts.Writers <= 0 {
		opts.Writers = 2
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	im := &importer{w: w, opts: opts, byReason: map[string]int64{}}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	batches := make(chan batch, opts.Writers) // bounds the memory: a few batches in flight
	var writers sync.WaitGroup
	for range opts.Writers {
		writers.Go(func() {
			for b := range batches {
				if ctx.Err() != nil {
					continue // drain
				}
				if err := im.write(ctx, b); err != nil {
					cancel(err)
				}
			}
		})
	}
	readErr := im.read(ctx, sources, batches)
	close(batches)
	writers.Wait()

	s := Summary{Files: len(sources), Bytes: im.bytes.Load(), Lines: im.lines.Load(), Stored: im.stored.Load(),
		Duplicates: im.duplicates.Load(), Rejected: im.rejected.Load(), Empty: im.empty.Load(), ByReason: im.byReason}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return s, err
	}
	return s, errors.Join(readErr, ctx.Err())
}

// read decodes the sources line by line and hands full batches to the writers.
func (im *importer) read(ctx context.Context, sources []Source, out chan<- batch) error {
	cur := batch{}
	for _, src := range sources {
		if err := im.readSource(ctx, src, &cur, out); err != nil {
			return err
		}
	}
	if len(cur.events) > 0 {
		select {
		case out <- cur:
		case <-ctx.Done():
		}
	}
	return nil
}

func (im *importer) readSource(ctx context.Context, src Source, cur *batch, out chan<- batch) error {
	f, err := src.Open()
	if err != nil {
		return fmt.Errorf("open %s: %w", src.Name, err)
	}
	defer f.Close()
	counted := &countingReader{r: f, n: &im.bytes}
	r, err := maybeGunzip(bufio.NewReaderSize(counted, 256<<10))
	if err != nil {
		return fmt.Errorf("%s: %w", src.Name, err)
	}
	lines := bufio.NewReaderSize(r, 64<<10)
	for n := int64(1); ; n++ {
		if ctx.Err() != nil {
			return nil
		}
		raw, tooLong, err := readLine(lines)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s:%d: %w", src.Name, n, err)
		}
		if len(raw) == 0 && !tooLong {
			if errors.Is(err, io.EOF) {
				return nil
			}
			im.empty.Add(1)
			continue
		}
		im.lines.Add(1)
		l := line{source: src.Name, number: n, raw: raw}
		var decodeErr error
		var e event.Event
		if tooLong {
			decodeErr = &event.FieldError{Reason: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}
		} else {
			e, decodeErr = event.DecodeWith(raw, event.Options{Now: im.opts.Now()})
		}
		if decodeErr != nil {
			if im.opts.Strict {
				return fmt.Errorf("%s:%d: %w (--strict)", src.Name, n, decodeErr)
			}
			im.reject(ctx, l, "invalid", decodeErr)
		} else {
			cur.events = append(cur.events, e)
			cur.lines = append(cur.lines, l)
			if len(cur.events) >= im.opts.BatchSize {
				select {
				case out <- *cur:
				case <-ctx.Done():
					return nil
				}
				*cur = batch{}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// readLine returns the next line without its newline. A line over MaxLineBytes is skipped to
// its end and reported as too long.
func readLine(r *bufio.Reader) (raw []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong {
			raw = append(raw, chunk...)
			if len(raw) > MaxLineBytes {
				tooLong, raw = true, nil
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSpace(raw), tooLong, err
	}
}

// write writes a batch; when PostgreSQL refuses an event in it, it splits the batch in halves
// until the event is alone, quarantines it, and writes the rest.
func (im *importer) write(ctx context.Context, b batch) error {
	unchanged, err := im.w.Write(ctx, b.events)
	switch {
	case err == nil:
		im.stored.Add(int64(len(b.events) - unchanged))
		im.duplicates.Add(int64(unchanged))
		im.progress()
		return nil
	case !errors.Is(err, event.ErrUnstorable):
		return fmt.Errorf("write %d events (from %s:%d): %w", len(b.events), b.lines[0].source, b.lines[0].number, err)
	case len(b.events) == 1:
		im.reject(ctx, b.lines[0], "unstorable", err)
		return nil
	}
	half := len(b.events) / 2
	if err := im.write(ctx, batch{b.events[:half], b.lines[:half]}); err != nil {
		return err
	}
	return im.write(ctx, batch{b.events[half:], b.lines[half:]})
}

func (im *importer) progress() {
	if im.opts.OnProgress != nil {
		im.opts.OnProgress(Progress{Bytes: im.bytes.Load(), Lines: im.lines.Load(), Stored: im.stored.Load(),
			Duplicates: im.duplicates.Load(), Rejected: im.rejected.Load()})
	}
}

// reject counts, reports and quarantines an invalid line.
func (im *importer) reject(ctx context.Context, l line, reason string, err error) {
	msg := err.Error()
	var fe *event.FieldError
	if errors.As(err, &fe) {
		msg = fe.Error()
	}
	im.rejected.Add(1)
	im.mu.Lock()
	im.byReason[category(err)]++
	im.mu.Unlock()
	if im.opts.OnRejected != nil {
		im.opts.OnRejected(Rejected{Source: l.source, Line: l.number, Reason: msg})
	}
	if im.opts.Quarantine != nil {
		r := event.Rejection{ReceivedAt: im.opts.Now(), Path: "import", Status: 400, Reason: reason,
			Error: fmt.Sprintf("%s:%d: %s", l.source, l.number, msg), Index: -1, ContentType: "application/x-ndjson", Body: l.raw}
		if fe != nil {
			r.Field = fe.Field
		}
		if qErr := im.opts.Quarantine.Quarantine(ctx, []event.Rejection{r}); qErr != nil && im.opts.OnRejected != nil {
			im.opts.OnRejected(Rejected{Source: l.source, Line: l.number, Reason: "not kept in quarantine: " + qErr.Error()})
		}
	}
}

// category is the reason without the details that vary from line to line (byte offsets).
func category(err error) string {
	var fe *event.FieldError
	if !errors.As(err, &fe) {
		if errors.Is(err, event.ErrUnstorable) {
			return "refused by the database"
		}
		return err.Error()
	}
	reason := fe.Reason
	if i := strings.Index(reason, " at byte "); i >= 0 {
		reason = reason[:i]
	}
	if fe.Field == "" {
		return reason
	}
	return fe.Field + ": " + reason
}

// SortedReasons returns the summary's reasons, most frequent first.
func (s Summary) SortedReasons() []string {
	reasons := make([]string, 0, len(s.ByReason))
	for r := range s.ByReason {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if s.ByReason[reasons[i]] != s.ByReason[reasons[j]] {
			return s.ByReason[reasons[i]] > s.ByReason[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	return reasons
}

// maybeGunzip inflates r when it starts with gzip's magic bytes, whatever the file is named.
func maybeGunzip(r *bufio.Reader) (io.Reader, error) {
	magic, err := r.Peek(2)
	if err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return r, nil // too short to be gzip, or not gzip: read as it is
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	zr.Multistream(true)
	return zr, nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
