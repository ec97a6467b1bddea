package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/segment-sink/segment-sink/internal/event"
	"github.com/segment-sink/segment-sink/internal/httpapi"
	"github.com/segment-sink/segment-sink/internal/store"
)

const (
	benchSecret   = "bench-secret"
	benchWriteKey = "bench-key"
)

// webhookRequests makes signed single-event webhook requests, as Segment sends them.
func webhookRequests(gen *generator, run string) func(int) request {
	return func(int) request {
		body, id := gen.next(nil, run)
		h := http.Header{"Content-Type": {"application/json"}, "X-Signature": {httpapi.Sign(benchSecret, body)}}
		return request{body: body, ids: []string{id}, header: h}
	}
}

// batchRequests makes /v1/batch requests of size events, as an SDK sends them.
func batchRequests(gen *generator, run string, size int) func(int) request {
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(benchWriteKey+":"))
	return func(int) request {
		body := []byte(`{"batch":[`)
		ids := make([]string, size)
		for i := range size {
			if i > 0 {
				body = append(body, ',')
			}
			body, ids[i] = gen.next(body, run)
		}
		body = append(body, `],"sentAt":"2024-05-01T10:00:00.500Z"}`...)
		h := http.Header{"Content-Type": {"application/json"}, "Authorization": {auth}}
		return request{body: body, ids: ids, header: h}
	}
}

// ceilingHandler only reads the body and answers 200: what this machine can serve at all.
func ceilingHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok","events":1}`))
	})
}

// naiveHandler checks the signature, decodes the event with the sink's own decoder, and runs
// one INSERT … ON CONFLICT DO NOTHING before answering: the receiver one writes first.
func naiveHandler(ctx context.Context, dbURL string, conns int) (http.Handler, func(), error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, nil, err
	}
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	inserts := map[event.Type]string{}
	for _, t := range event.Types {
		cols := store.TableColumns(t)
		params := make([]string, len(cols))
		for i := range cols {
			params[i] = "$" + strconv.Itoa(i+1)
		}
		inserts[t] = fmt.Sprintf(`INSERT INTO %s ("%s") VALUES (%s) ON CONFLICT (message_id) DO NOTHING`,
			t.Table(), strings.Join(cols, `", "`), strings.Join(params, ", "))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Signature") != httpapi.Sign(benchSecret, body) {
			http.Error(w, `{"error":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		e, err := event.Decode(body, time.Now())
		if err != nil {
			http.Error(w, `{"error":"invalid"}`, http.StatusBadRequest)
			return
		}
		if _, err := pool.Exec(r.Context(), inserts[e.Type], store.RowValues(&e)...); err != nil {
			http.Error(w, `{"error":"database"}`, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"status":"ok","events":1}`))
	}), pool.Close, nil
}

// serveRole runs the ceiling or naive server in this process, so that, like the sink, it is a
// process of its own beside the load generator. It prints the sink's "listening on" line.
func serveRole(ctx context.Context, o options, stdout io.Writer) error {
	handler := ceilingHandler()
	if o.serve == "naive" {
		h, closePool, err := naiveHandler(ctx, o.dbURL, o.conns)
		if err != nil {
			return err
		}
		defer closePool()
		handler = h
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler}
	go func() { <-ctx.Done(); srv.Close() }()
	fmt.Fprintf(stdout, "segment-sink listening on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// httpCeiling: the same requests against a process that only reads the body and answers 200.
func httpCeiling(ctx context.Context, o options, gen *generator) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	l := load{conns: o.conns, duration: o.duration, make: webhookRequests(gen, "ceiling"), redeliver: 0.1}
	stats, _, err := runServer(ctx, exec.CommandContext(ctx, self, "-serve", "ceiling"), &l, "/webhook")
	if err != nil {
		return result{}, err
	}
	return stats.result(), nil
}

// copyCeiling: the same kind of rows, built beforehand, written with plain pgx CopyFrom into
// the sink's own tables (same columns, same indexes), 2000 rows per COPY.
func copyCeiling(ctx context.Context, o options, gen *generator) (result, error) {
	dbURL, err := freshDatabase(ctx, o.serverURL, "sinkbench_copy", true)
	if err != nil {
		return result{}, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return result{}, err
	}
	defer conn.Close(context.Background())

	// Rows per table from 2000 decoded events; each COPY gives them fresh messageIds.
	templates := map[event.Type][][]any{}
	for range 2000 {
		raw, _ := gen.next(nil, "copy-template")
		e, err := event.Decode(raw, time.Now())
		if err != nil {
			return result{}, err
		}
		templates[e.Type] = append(templates[e.Type], store.RowValues(&e))
	}
	var stats loadStats
	mark := markCPU(0) // no server process: the load generator is the COPY client
	start := time.Now()
	for n := 0; time.Since(start) < o.duration && ctx.Err() == nil; n++ {
		t0 := time.Now()
		for _, t := range event.Types {
			rows := templates[t]
			fresh := make([][]any, len(rows))
			for i, row := range rows {
				fresh[i] = append([]any{fmt.Sprintf("copy-%d-%d-%d", n, t, i)}, row[1:]...)
			}
			if _, err := conn.CopyFrom(ctx, pgx.Identifier{t.Table()}, store.TableColumns(t), pgx.CopyFromRows(fresh)); err != nil {
				return result{}, fmt.Errorf("copy into %s: %w", t.Table(), err)
			}
			stats.events += int64(len(rows))
		}
		stats.requests++
		stats.latencies = append(stats.latencies, time.Since(t0))
	}
	stats.elapsed = time.Since(start)
	stats.cpu = mark.since(stats.events)
	return stats.result(), nil
}

// naiveInsert: the same requests against the naive receiver, in a process of its own.
func naiveInsert(ctx context.Context, o options, gen *generator) (result, error) {
	dbURL, err := freshDatabase(ctx, o.serverURL, "sinkbench_naive", true)
	if err != nil {
		return result{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	l := load{conns: o.conns, duration: o.duration, make: webhookRequests(gen, "naive"), redeliver: 0.1}
	cmd := exec.CommandContext(ctx, self, "-serve", "naive", "-database-url", dbURL, "-conns", strconv.Itoa(o.conns))
	stats, _, err := runServer(ctx, cmd, &l, "/webhook")
	if err != nil {
		return result{}, err
	}
	r := stats.result()
	return r, check(ctx, dbURL, stats.acked, &r)
}

func sinkWebhook(ctx context.Context, o options, gen *generator) (result, error) {
	return runSink(ctx, o, "sinkbench_webhook", load{conns: o.conns, duration: o.duration, make: webhookRequests(gen, "webhook"), redeliver: 0.1}, "/webhook")
}

func sinkBatch(ctx context.Context, o options, gen *generator) (result, error) {
	return runSink(ctx, o, "sinkbench_batch", load{conns: o.batchConns, duration: o.duration, make: batchRequests(gen, "batch", o.batchSize), redeliver: 0.1}, "/v1/batch")
}

// sinkOverload sends more than the sink's memory budget can hold (by default 1024 connections
// with 100-event batches, ~80 MB in flight against MAX_PENDING_BYTES of 32 MiB) for the whole
// run, with the default settings: the sink must answer 503 to the excess, keep writing the rest
// exactly once, and keep its memory flat.
func sinkOverload(ctx context.Context, o options, gen *generator) (result, error) {
	return runSink(ctx, o, "sinkbench_overload", load{conns: o.overloadConns, duration: o.duration, make: batchRequests(gen, "overload", o.batchSize), redeliver: 0.1}, "/v1/batch")
}

// runSink starts the sink binary on a fresh database, runs the load against it, records its
// peak memory, stops it, and checks the database.
func runSink(ctx context.Context, o options, db string, l load, path string) (result, error) {
	dbURL, err := freshDatabase(ctx, o.serverURL, db, false)
	if err != nil {
		return result{}, err
	}
	cmd := exec.CommandContext(ctx, o.sinkBinary)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "LISTEN_ADDR=127.0.0.1:0", "SHARED_SECRET="+benchSecret,
		"WRITE_KEYS="+benchWriteKey, "LOG_LEVEL=warn")
	if o.sinkEnv != "" {
		cmd.Env = append(cmd.Env, strings.Split(o.sinkEnv, ",")...)
	}
	stats, rss, err := runServer(ctx, cmd, &l, path)
	if err != nil {
		return result{}, fmt.Errorf("%w (is %s built? `make build`)", err, o.sinkBinary)
	}
	r := stats.result()
	r.PeakRSSMB = float64(rss.peak) / (1 << 20)
	r.RSSFirstHalfMB, r.RSSSecondHalfMB = float64(rss.halves[0])/(1<<20), float64(rss.halves[1])/(1<<20)
	return r, check(ctx, dbURL, stats.acked, &r)
}

// rssUse is a process's peak resident memory, over the whole run and in each half of the load.
type rssUse struct {
	peak   int64
	halves [2]int64
}

// runServer starts a server process that prints "segment-sink listening on URL", runs the load
// against URL+path, and stops the process with SIGTERM. It returns the load's stats and the
// process's peak resident memory.
func runServer(ctx context.Context, cmd *exec.Cmd, l *load, path string) (*loadStats, rssUse, error) {
	var rss rssUse
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, rss, err
	}
	if err := cmd.Start(); err != nil {
		return nil, rss, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "segment-sink listening on "); ok {
			l.url = addr + path
			break
		}
	}
	if l.url == "" {
		return nil, rss, fmt.Errorf("%s did not start", cmd.Path)
	}
	go io.Copy(io.Discard, stdout)
	mark := markCPU(cmd.Process.Pid)
	sampled := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		// The resident memory now and then, to tell a plateau from a climb.
		defer close(sampled)
		start := time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				half := min(int(2*time.Since(start)/l.duration), 1)
				rss.halves[half] = max(rss.halves[half], procMemory(cmd.Process.Pid, "VmRSS:"))
			}
		}
	}()
	stats := l.run(ctx)
	close(stop)
	<-sampled
	stats.cpu = mark.since(stats.events)
	rss.peak = procMemory(cmd.Process.Pid, "VmHWM:")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	return stats, rss, nil
}

// check counts, for every acknowledged messageId, its rows across the event tables.
func check(ctx context.Context, dbURL string, acked map[string]bool, r *result) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	parts := make([]string, len(event.Types))
	for i, t := range event.Types {
		parts[i] = "SELECT message_id FROM " + t.Table()
	}
	rows, err := conn.Query(ctx, strings.Join(parts, " UNION ALL "))
	if err != nil {
		return err
	}
	count := map[string]int{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		count[id]++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for id := range acked {
		switch n := count[id]; {
		case n == 0:
			r.Lost++
		case n > 1:
			r.Duplicated++
		}
	}
	r.Checked = int64(len(acked))
	return nil
}

// freshDatabase drops and creates database name on the server, migrating it when asked.
func freshDatabase(ctx context.Context, serverURL, name string, migrate bool) (string, error) {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s (set BENCH_DATABASE_URL): %w", serverURL, err)
	}
	defer admin.Close(context.Background())
	for _, q := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "CREATE DATABASE " + name} {
		if _, err := admin.Exec(ctx, q); err != nil {
			return "", err
		}
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	if migrate {
		s, err := store.Open(ctx, u.String(), store.Options{})
		if err != nil {
			return "", err
		}
		defer s.Close()
		if _, err := s.MigrateUp(ctx); err != nil {
			return "", err
		}
	}
	return u.String(), nil
}

// procMemory reads one of a process's memory figures in /proc/PID/status (VmRSS: resident now,
// VmHWM: its high-water mark), in bytes.
func procMemory(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sinkImport writes an NDJSON.gz archive of o.importEvents events and times `segment-sink
// import` loading it into a fresh database: what a backfill achieves against the COPY ceiling.
func sinkImport(ctx context.Context, o options, gen *generator) (result, error) {
	dbURL, err := freshDatabase(ctx, o.serverURL, "sinkbench_import", false)
	if err != nil {
		return result{}, err
	}
	dir, err := os.MkdirTemp("", "sinkbench-import")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	file := dir + "/archive.ndjson.gz"
	f, err := os.Create(file)
	if err != nil {
		return result{}, err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	acked := make(map[string]bool, o.importEvents)
	var buf []byte
	for range o.importEvents {
		var id string
		buf, id = gen.next(buf[:0], "import")
		buf = append(buf, '\n')
		zw.Write(buf)
		acked[id] = true
	}
	if err := errors.Join(zw.Close(), f.Close()); err != nil {
		return result{}, err
	}

	cmd := exec.CommandContext(ctx, o.sinkBinary, "import", file)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	mark := markCPU(cmd.Process.Pid)
	start := time.Now()
	var rss int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Sample the peak memory while it runs: the process is gone once Wait returns.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var cpu cpuUse
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				return result{}, fmt.Errorf("segment-sink import: %w", err)
			}
			waiting = false
		case <-tick.C:
			rss = max(rss, procMemory(cmd.Process.Pid, "VmHWM:"))
			if c := mark.since(int64(o.importEvents)); c.Server > 0 {
				cpu = c
			}
		}
	}
	elapsed := time.Since(start)
	stats := loadStats{events: int64(o.importEvents), requests: 1, elapsed: elapsed, cpu: cpu}
	r := stats.result()
	r.P50Ms, r.P99Ms, r.MaxMs = 0, 0, 0
	r.PeakRSSMB = float64(rss) / (1 << 20)
	return r, check(ctx, dbURL, acked, &r)
}
