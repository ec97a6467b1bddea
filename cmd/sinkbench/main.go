// Command sinkbench measures segment-sink against its own ceilings, in one run on one machine,
// with one load generator: a do-nothing HTTP handler (what the machine can serve), plain pgx
// COPY into the same tables (what PostgreSQL can absorb), one synchronous INSERT per request (the
// naive receiver), then the sink itself with single signed webhook events and with 100-event
// batches. It prints a table, writes the figures as JSON, and checks that every acknowledged
// event is in the database exactly once. `make bench` runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sinkbench:", err)
		os.Exit(1)
	}
}

type options struct {
	serverURL     string
	sinkBinary    string
	duration      time.Duration
	conns         int
	batchConns    int
	overloadConns int
	batchSize     int
	out           string
	only          string
	sinkEnv       string
	importEvents  int
	serve         string
	dbURL         string
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("sinkbench", flag.ContinueOnError)
	fs.StringVar(&o.serverURL, "server-url", envOr("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL server to create the benchmark databases in (BENCH_DATABASE_URL)")
	fs.StringVar(&o.sinkBinary, "sink", "bin/segment-sink", "the segment-sink binary to measure")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each scenario runs")
	fs.IntVar(&o.conns, "conns", 64, "keep-alive connections for single-event scenarios")
	fs.IntVar(&o.batchConns, "batch-conns", 16, "keep-alive connections for the batched scenario")
	fs.IntVar(&o.batchSize, "batch-size", 100, "events per batched request")
	fs.IntVar(&o.overloadConns, "overload-conns", 1024, "keep-alive connections for the overload scenario (batched requests)")
	fs.StringVar(&o.out, "out", "bench-results.json", "where to write the results as JSON")
	fs.StringVar(&o.only, "only", "", "comma-separated scenarios to run (default: all)")
	fs.IntVar(&o.importEvents, "import-events", 300000, "events in the archive the import scenario loads")
	fs.StringVar(&o.sinkEnv, "sink-env", "", "comma-separated KEY=VALUE settings for the sink process only")
	fs.StringVar(&o.serve, "serve", "", "internal: run the ceiling or naive server in this process")
	fs.StringVar(&o.dbURL, "database-url", "", "internal: the naive server's database")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.serve != "" {
		return serveRole(ctx, o, stdout)
	}

	host, _ := os.Hostname()
	report := report{Started: time.Now().UTC(), Host: host, CPUs: runtime.NumCPU(), Duration: o.duration.String(),
		Conns: o.conns, BatchConns: o.batchConns, BatchSize: o.batchSize}
	gen := newGenerator()

	steps := []struct {
		name string
		fn   func(context.Context, options, *generator) (result, error)
	}{
		{"http-ceiling", httpCeiling},
		{"copy-ceiling", copyCeiling},
		{"naive-insert", naiveInsert},
		{"sink-webhook", sinkWebhook},
		{"sink-batch", sinkBatch},
		{"sink-overload", sinkOverload},
		{"sink-import", sinkImport},
	}
	for _, s := range steps {
		if o.only != "" && !slices.Contains(strings.Split(o.only, ","), s.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "sinkbench: %s for %s...\n", s.name, o.duration)
		r, err := s.fn(ctx, o, gen)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		r.Name = s.name
		report.Results = append(report.Results, r)
	}
	report.ratios()
	report.print(stdout)
	b, _ := json.MarshalIndent(report, "", "  ")
	if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nresults written to %s\n", o.out)
	for _, r := range report.Results {
		if r.Lost > 0 || r.Duplicated > 0 {
			return fmt.Errorf("%s: %d acknowledged events lost, %d duplicated", r.Name, r.Lost, r.Duplicated)
		}
	}
	return nil
}

// result is one scenario's figures.
type result struct {
	Name         string  `json:"name"`
	Events       int64   `json:"events"`
	Requests     int64   `json:"requests"`
	EventsPerSec float64 `json:"events_per_sec"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	Errors       int64   `json:"errors"`
	// Refused counts the 503 answers that say the memory budget is full; other 503s are errors.
	Refused   int64   `json:"refused_503"`
	PeakRSSMB float64 `json:"peak_rss_mb,omitempty"`
	// The peak resident memory in the first and the second half of the load: a sink whose
	// memory is bounded shows a plateau, not a climb.
	RSSFirstHalfMB  float64 `json:"rss_first_half_mb,omitempty"`
	RSSSecondHalfMB float64 `json:"rss_second_half_mb,omitempty"`
	Checked         int64   `json:"checked_ids,omitempty"`
	Lost            int64   `json:"lost"`
	Duplicated      int64   `json:"duplicated"`
	// CPUMicrosPerEvent splits the machine's work per event between the server under test,
	// the load generator and PostgreSQL: what bounds the throughput.
	CPUMicrosPerEvent cpuUse `json:"cpu_us_per_event"`
}

type report struct {
	Started    time.Time          `json:"started"`
	Host       string             `json:"host"`
	CPUs       int                `json:"cpus"`
	Duration   string             `json:"duration_per_scenario"`
	Conns      int                `json:"conns"`
	BatchConns int                `json:"batch_conns"`
	BatchSize  int                `json:"batch_size"`
	Results    []result           `json:"results"`
	Ratios     map[string]float64 `json:"ratios"`
}

func (r *report) get(name string) result {
	for _, x := range r.Results {
		if x.Name == name {
			return x
		}
	}
	return result{}
}

func (r *report) ratios() {
	ratio := func(a, b string) float64 {
		if d := r.get(b).EventsPerSec; d > 0 {
			return r.get(a).EventsPerSec / d
		}
		return 0
	}
	r.Ratios = map[string]float64{
		"sink_webhook/http_ceiling": ratio("sink-webhook", "http-ceiling"),
		"sink_webhook/copy_ceiling": ratio("sink-webhook", "copy-ceiling"),
		"sink_webhook/naive_insert": ratio("sink-webhook", "naive-insert"),
		"sink_batch/copy_ceiling":   ratio("sink-batch", "copy-ceiling"),
		"sink_batch/http_ceiling":   ratio("sink-batch", "http-ceiling"),
		"sink_import/copy_ceiling":  ratio("sink-import", "copy-ceiling"),
	}
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nsinkbench %s on %s (%d CPUs), %s per scenario, %d connections (%d for batches of %d)\n\n",
		r.Started.Format("2006-01-02 15:04 UTC"), r.Host, r.CPUs, r.Duration, r.Conns, r.BatchConns, r.BatchSize)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tevents/s\tp50 ms\tp99 ms\tmax ms\terrors\t503s\tpeak RSS MB\tacked ids checked\tlost\tduplicated\tCPU µs/event: server\tload gen\tpostgres\t")
	for _, x := range r.Results {
		rss := "-"
		if x.PeakRSSMB > 0 {
			rss = fmt.Sprintf("%.0f", x.PeakRSSMB)
		}
		checked := "-"
		if x.Checked > 0 {
			checked = fmt.Sprint(x.Checked)
		}
		c := x.CPUMicrosPerEvent
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%s\t%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t\n",
			x.Name, x.EventsPerSec, x.P50Ms, x.P99Ms, x.MaxMs, x.Errors, x.Refused, rss, checked, x.Lost, x.Duplicated,
			c.Server, c.LoadGenerator, c.Postgres)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, x := range r.Results {
		if x.RSSSecondHalfMB > 0 {
			fmt.Fprintf(w, "  %-28s peak RSS %.0f MB in the first half of the load, %.0f MB in the second\n",
				x.Name+":", x.RSSFirstHalfMB, x.RSSSecondHalfMB)
		}
	}
	fmt.Fprintln(w)
	for _, k := range slices.Sorted(maps.Keys(r.Ratios)) {
		if r.Ratios[k] > 0 {
			fmt.Fprintf(w, "  %-28s %.2fx\n", k, r.Ratios[k])
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
