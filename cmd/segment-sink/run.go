package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segment-sink/segment-sink/internal/batcher"
	"github.com/segment-sink/segment-sink/internal/config"
	"github.com/segment-sink/segment-sink/internal/httpapi"
	"github.com/segment-sink/segment-sink/internal/metrics"
	"github.com/segment-sink/segment-sink/internal/store"
)

const usageHead = `segment-sink receives Segment events and writes them, exactly once, into PostgreSQL.

Usage:
  segment-sink [serve] [flags]          run the HTTP receiver (the default command)
  segment-sink migrate up|down|status [flags]
                                        apply all migrations, roll back the latest one, or list them
  segment-sink import [--strict] [flags] PATH...
                                        load archived events: NDJSON files (gzipped or not), globs,
                                        directories, or - for stdin; safe to run again
  segment-sink views refresh [flags]    create or update one view per track event (order_completed, …)
  segment-sink rejected list [--all] [--limit N] [flags]
                                        show refused requests kept in quarantine (rejected_events)
  segment-sink rejected replay [--id N,...] [--url URL] [flags]
                                        send them again to a running sink, after a fix
  segment-sink healthcheck [flags]      exit 0 if the sink at LISTEN_ADDR answers /healthz (for Docker)
  segment-sink help                     show this text

Endpoints:
  POST /webhook   one Segment event (JSON object) or an array of them; signed with X-Signature
  POST /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group, /v1/alias, /v1/batch, /v1/import
                  Segment's HTTP Tracking API, for Segment's SDKs; needs WRITE_KEYS
  GET  /metrics   Prometheus metrics (or on METRICS_ADDR)
  GET  /healthz   the process is alive
  GET  /readyz    the database answers and its schema is migrated

Every setting is an environment variable and a flag; a flag wins:
`

// run is the whole program: it parses args, wires the parts, and returns when ctx ends (a
// signal) or something fails. Help returns flag.ErrHelp after printing the usage to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	command := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		command, args = args[0], args[1:]
	}
	switch command {
	case "serve":
		return serve(ctx, args, getenv, stdout, stderr)
	case "migrate":
		return migrate(ctx, args, getenv, stdout)
	case "healthcheck":
		return healthcheck(ctx, args, getenv, stdout)
	case "rejected":
		return rejected(ctx, args, getenv, stdout)
	case "import":
		return importFiles(ctx, args, getenv, stdout, stderr)
	case "views":
		return views(ctx, args, getenv, stdout)
	case "help":
		usage(stdout)
		return flag.ErrHelp
	default:
		return fmt.Errorf("unknown command %q (see --help)", command)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	config.Usage(w)
}

// load reads and validates the configuration; extra adds a command's own flags.
func load(args []string, getenv func(string) string, stdout io.Writer, extra ...func(*flag.FlagSet)) (config.Config, []string, error) {
	cfg, rest, err := config.Load(args, getenv, "segment-sink", stdout, extra...)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return cfg, nil, err
	}
	if err != nil {
		return cfg, nil, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, rest, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	level, _ := cfg.SlogLevel() // validated
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func openStore(ctx context.Context, cfg config.Config) (*store.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: int32(cfg.PoolSize())})
}

// openMigrated opens the database and, with AUTO_MIGRATE (the default), applies the pending
// migrations; it returns how many it applied.
func openMigrated(ctx context.Context, cfg config.Config) (*store.Store, int, error) {
	s, err := openStore(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	if !cfg.AutoMigrate {
		return s, 0, nil
	}
	n, err := s.MigrateUp(ctx)
	if err != nil {
		s.Close()
		return nil, 0, err
	}
	return s, n, nil
}

func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("migrate needs a direction: up, down or status")
	}
	direction := args[0]
	cfg, _, err := load(args[1:], getenv, stdout)
	if err != nil {
		return err
	}
	s, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	switch direction {
	case "up":
		n, err := s.MigrateUp(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "applied %d migration(s)\n", n)
		return nil
	case "down":
		if err := s.MigrateDown(ctx); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "rolled back the latest migration")
		return nil
	case "status":
		return s.MigrationStatus(ctx, stdout)
	default:
		return fmt.Errorf("unknown migrate direction %q: use up, down or status", direction)
	}
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, rest, err := load(args, getenv, stdout)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", rest)
	}
	log := newLogger(cfg, stderr)
	if limit := limitMemory(cfg.MaxPendingBytes); limit > 0 {
		log.Info("soft memory limit", "bytes", limit, "from", "4 x MAX_PENDING_BYTES, at least 64 MiB (set GOMEMLIMIT to choose)")
	}

	s, applied, err := openMigrated(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	log.Info("database ready", "migrations_applied", applied, "auto_migrate", cfg.AutoMigrate)

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)

	b, err := batcher.New(s, batcher.Config{
		MaxEvents:        cfg.BatchMaxEvents,
		MaxWait:          cfg.BatchMaxWait,
		Flushers:         cfg.FlushWorkers,
		JoinAt:           batcher.DefaultJoinAt,
		MaxPendingEvents: cfg.MaxPendingEvents,
		MaxPendingBytes:  cfg.MaxPendingBytes,
		// Nobody waits for a flush longer than a request waits for its commit.
		FlushTimeout: cfg.AckTimeout,
		Logger:       log,
		Observer:     m,
	})
	if err != nil {
		return err
	}
	defer b.Close()
	metrics.WatchPending(reg, b)

	if len(cfg.SharedSecrets) == 0 {
		log.Warn("SHARED_SECRET is not set: /webhook accepts unsigned requests from anyone who can reach it")
	}
	if len(cfg.WriteKeys) == 0 && cfg.TrackingOpen {
		log.Warn("TRACKING_API_OPEN is set without WRITE_KEYS: /v1/* accepts events from anyone who can reach it")
	}
	apiCfg := httpapi.Config{
		Secrets:        cfg.SharedSecrets,
		WriteKeys:      cfg.WriteKeys,
		TrackingOpen:   cfg.TrackingOpen,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		AckTimeout:     cfg.AckTimeout,
		Logger:         log,
		Observer:       m,
		Quarantine:     s,
		TrustedProxies: cfg.TrustedProxies,
	}
	if cfg.RejectedRetention > 0 {
		stopPruning := every(time.Hour, func(ctx context.Context) {
			n, err := s.PruneRejected(ctx, cfg.RejectedRetention)
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("pruning rejected events failed", "error", err)
			case n > 0:
				log.Info("pruned rejected events", "deleted", n, "retention", cfg.RejectedRetention.String())
			}
		})
		defer stopPruning()
	}
	if cfg.ViewsRefresh > 0 {
		stopViews := every(cfg.ViewsRefresh, func(ctx context.Context) {
			v, err := s.RefreshEventViews(ctx)
			if err != nil && ctx.Err() == nil {
				log.Warn("refreshing event views failed", "error", err)
				return
			}
			log.Debug("event views refreshed", "views", len(v))
		})
		defer stopViews()
	}
	if cfg.MetricsAddr == "" {
		apiCfg.Metrics = metrics.Handler(reg)
	} else {
		stopMetrics, err := serveMetrics(cfg.MetricsAddr, metrics.Handler(reg), log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	// Ready: the database answers with the schema migrated, and the memory budget has room.
	handler, err := httpapi.New(apiCfg, b, readiness{s, b})
	if err != nil {
		return err
	}

	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30*time.Second + cfg.AckTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if cfg.TLSCertFile != "" {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "segment-sink listening on %s://%s\n", scheme, ln.Addr())
	log.Info("listening", "addr", ln.Addr().String(), "batch_max_events", cfg.BatchMaxEvents,
		"flush_workers", cfg.FlushWorkers, "ack_timeout", cfg.AckTimeout.String())

	served := make(chan error, 1)
	go func() {
		if cfg.TLSCertFile != "" {
			served <- srv.ServeTLS(ln, cfg.TLSCertFile, cfg.TLSKeyFile)
			return
		}
		served <- srv.Serve(ln)
	}()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Stop accepting, let every accepted request wait for its commit and get its answer, then
	// flush what is left and close the database.
	log.Info("shutting down: draining accepted requests", "timeout", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Error("shutdown did not drain in time", "error", err)
	}
	b.Close()
	p, _ := b.Pending()
	log.Info("stopped", "events_left", p)
	return nil
}

// servePprof serves Go's profiler on its own address, never on the public one.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return serveSide("PPROF_ADDR", addr, mux, log)
}

// serveMetrics serves /metrics on its own address.
func serveMetrics(addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return serveSide("METRICS_ADDR", addr, mux, log)
}

// serveSide runs a side server (metrics, profiler) until stop is called.
func serveSide(setting, addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s: %w", setting, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("side server listening", "setting", setting, "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// every runs job now and then every interval until stop is called; stop waits for a run in
// progress to end.
func every(interval time.Duration, job func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			job(ctx)
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// views runs `segment-sink views refresh`.
func views(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "refresh" {
		return errors.New("views needs refresh")
	}
	cfg, _, err := load(args[1:], getenv, stdout)
	if err != nil {
		return err
	}
	s, _, err := openMigrated(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	refreshed, err := s.RefreshEventViews(ctx)
	if err != nil {
		return err
	}
	for _, v := range refreshed {
		fmt.Fprintf(stdout, "%-40s %4d properties  %s\n", v.Name, len(v.Columns), v.Event)
	}
	fmt.Fprintf(stdout, "%d event views\n", len(refreshed))
	return nil
}

// readiness is ready when every check is.
type readiness []httpapi.ReadinessChecker

func (r readiness) Ready(ctx context.Context) error {
	for _, c := range r {
		if err := c.Ready(ctx); err != nil {
			return err
		}
	}
	return nil
}

// healthcheck asks the sink at LISTEN_ADDR (on this host) for /healthz: the image's HEALTHCHECK,
// since the image has no shell and no curl.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, _, err := config.Load(args, getenv, "segment-sink healthcheck", stdout)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR %q: %w", cfg.ListenAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1" // listening on every address: this one too
	}
	scheme, client := "http", http.DefaultClient
	if cfg.TLSCertFile != "" {
		// Only whether the process answers matters here, not whom its certificate names.
		scheme = "https"
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %d", resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
