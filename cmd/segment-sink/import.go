package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/segment-sink/segment-sink/internal/backfill"
)

// maxReportedLines is how many invalid lines are printed one by one; the summary counts all.
const maxReportedLines = 20

// importFiles runs `segment-sink import PATH...`: archived NDJSON(.gz) events into the tables.
func importFiles(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var (
		strict    bool
		batchSize int
		writers   int
	)
	cfg, paths, err := load(args, getenv, stdout, func(fs *flag.FlagSet) {
		fs.BoolVar(&strict, "strict", false, "stop at the first invalid line")
		fs.IntVar(&batchSize, "batch-size", 2000, "events per transaction")
		fs.IntVar(&writers, "writers", 2, "transactions written at once")
	})
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// A long batch job: the server's GOGC of 400 would let the heap grow five times over the
		// few batches in flight. Measured with sinkbench's import scenario (300k events): peak
		// RSS 230 MB at 400 and 5000-event batches, 62 MB at 100 and 2000-event batches, at the
		// same speed (0.96-1.1x the COPY ceiling), and the same for 600k events.
		debug.SetGCPercent(100)
	}
	if len(paths) == 0 {
		return errors.New("import needs files, globs, directories or - (stdin)")
	}
	sources, err := backfill.Sources(paths, os.Stdin)
	if err != nil {
		return err
	}
	s, _, err := openMigrated(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()

	var total int64
	for _, src := range sources {
		total += src.Size
	}
	report := newProgressReport(stderr, total)
	var reportMu sync.Mutex
	shown := 0
	start := time.Now()
	summary, err := backfill.Run(ctx, sources, s, backfill.Options{
		BatchSize: batchSize, Writers: writers, Strict: strict, Quarantine: s,
		OnProgress: report.update,
		OnRejected: func(r backfill.Rejected) {
			reportMu.Lock()
			defer reportMu.Unlock()
			if shown++; shown <= maxReportedLines {
				report.println(fmt.Sprintf("%s:%d: %s", r.Source, r.Line, r.Reason))
			}
		},
	})
	report.finish()
	took := time.Since(start)
	fmt.Fprintf(stdout, "import: %d files, %d lines, %d stored, %d duplicates, %d rejected, %d empty lines, in %s (%.0f lines/s, %.1f MB/s)\n",
		summary.Files, summary.Lines, summary.Stored, summary.Duplicates, summary.Rejected, summary.Empty,
		took.Round(time.Millisecond), float64(summary.Lines)/took.Seconds(), float64(summary.Bytes)/took.Seconds()/1e6)
	if summary.Rejected > 0 {
		fmt.Fprintln(stdout, "rejected by reason (kept in rejected_events; see `segment-sink rejected list`):")
		for _, reason := range summary.SortedReasons() {
			fmt.Fprintf(stdout, "  %8d  %s\n", summary.ByReason[reason], reason)
		}
	}
	if err != nil {
		return fmt.Errorf("import stopped: %w (running it again is safe: nothing is stored twice)", err)
	}
	return nil
}

// progressReport shows an import's progress: a bar on a terminal, a log line every 5 s
// otherwise.
type progressReport struct {
	w    io.Writer
	bar  *progressbar.ProgressBar
	mu   sync.Mutex
	last time.Time
}

func newProgressReport(w io.Writer, total int64) *progressReport {
	r := &progressReport{w: w, last: time.Now()}
	if f, ok := w.(*os.File); ok && isTerminal(f) && total > 0 {
		r.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("importing"), progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetPredictTime(true), progressbar.OptionFullWidth(), progressbar.OptionClearOnFinish())
	}
	return r
}

func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

func (r *progressReport) update(p backfill.Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bar != nil {
		r.bar.Describe(fmt.Sprintf("%d events", p.Stored+p.Duplicates))
		r.bar.Set64(p.Bytes)
		return
	}
	if time.Since(r.last) >= 5*time.Second {
		r.last = time.Now()
		fmt.Fprintf(r.w, "import: %d lines read, %d stored, %d duplicates, %d rejected, %.1f MB read\n",
			p.Lines, p.Stored, p.Duplicates, p.Rejected, float64(p.Bytes)/1e6)
	}
}

func (r *progressReport) println(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bar != nil {
		r.bar.Clear()
	}
	fmt.Fprintln(r.w, line)
}

func (r *progressReport) finish() {
	if r.bar != nil {
		r.bar.Finish()
	}
}
