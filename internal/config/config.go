// Package config reads segment-sink's settings: each from an environment variable, overridden
// by a command-line flag of the same meaning. Load fills a Config, Validate rejects impossible
// values at start-up with a message that names the variable.
package config

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// Defaults of the settings.
const (
	DefaultListenAddr        = ":8080"
	DefaultBatchMaxEvents    = 2000
	DefaultBatchMaxWait      = 0
	DefaultFlushWorkers      = 2
	DefaultMaxPendingEvents  = 50_000
	DefaultMaxPendingBytes   = 32 << 20
	DefaultAckTimeout        = 3 * time.Second
	DefaultRejectedRetention = 7 * 24 * time.Hour
	DefaultReadHeaderTimeout = 10 * time.Second
	// MaxRequestEvents is the most events a tracking API batch may hold (Segment's limit).
	MaxRequestEvents       = 2500
	DefaultMaxBodyBytes    = 16 << 20
	DefaultShutdownTimeout = 15 * time.Second
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "json"
	// SegmentTimeout is how long Segment waits for an answer before it retries.
	SegmentTimeout = 5 * time.Second
)

// Config is every setting of the sink.
type Config struct {
	DatabaseURL       string
	ListenAddr        string
	SharedSecrets     []string
	WriteKeys         []string
	TrackingOpen      bool
	BatchMaxEvents    int
	BatchMaxWait      time.Duration
	FlushWorkers      int
	MaxPendingEvents  int
	MaxPendingBytes   int64
	AckTimeout        time.Duration
	MaxBodyBytes      int64
	DBMaxConns        int
	AutoMigrate       bool
	ShutdownTimeout   time.Duration
	LogLevel          string
	LogFormat         string
	PprofAddr         string
	MetricsAddr       string
	RejectedRetention time.Duration
	TrustedProxies    []string
	TLSCertFile       string
	TLSKeyFile        string
	ReadHeaderTimeout time.Duration
	ViewsRefresh      time.Duration
}

// Setting describes one setting, for --help and the README.
type Setting struct {
	Env, Flag, Usage string
	value            flag.Value
}

// Default returns the setting's default as text.
func (s Setting) Default() string { return s.value.String() }

func (c *Config) settings() []Setting {
	return []Setting{
		{"DATABASE_URL", "database-url", "PostgreSQL URL, e.g. postgres://user:pass@host:5432/db (required)", (*stringValue)(&c.DatabaseURL)},
		{"LISTEN_ADDR", "listen-addr", "address the HTTP server listens on", (*stringValue)(&c.ListenAddr)},
		{"SHARED_SECRET", "shared-secret", "Segment webhook shared secret; a comma-separated list accepts any of them (rotation); unset accepts unsigned requests", (*listValue)(&c.SharedSecrets)},
		{"WRITE_KEYS", "write-keys", "comma-separated write keys the tracking API (/v1/*) accepts; unset turns it off (404)", (*listValue)(&c.WriteKeys)},
		{"TRACKING_API_OPEN", "tracking-api-open", "with no WRITE_KEYS, accept tracking API requests without a key (trusted networks only)", (*boolValue)(&c.TrackingOpen)},
		{"BATCH_MAX_EVENTS", "batch-max-events", "most events written by one flush (one transaction)", (*intValue)(&c.BatchMaxEvents)},
		{"BATCH_MAX_WAIT", "batch-max-wait", "how long a flush may wait for more events before writing; 0 writes as soon as a flusher is free", (*durationValue)(&c.BatchMaxWait)},
		{"FLUSH_WORKERS", "flush-workers", "flushes that may run at once, each on its own connection", (*intValue)(&c.FlushWorkers)},
		{"MAX_PENDING_EVENTS", "max-pending-events", "most events held in memory waiting for a commit; past it requests get 503", (*intValue)(&c.MaxPendingEvents)},
		{"MAX_PENDING_BYTES", "max-pending-bytes", "most bytes of events held in memory waiting for a commit; past it requests get 503", (*int64Value)(&c.MaxPendingBytes)},
		{"ACK_TIMEOUT", "ack-timeout", "how long a request waits for its commit before it gets 503 (keep it under Segment's 5s)", (*durationValue)(&c.AckTimeout)},
		{"MAX_BODY_BYTES", "max-body-bytes", "largest request body accepted; larger gets 413", (*int64Value)(&c.MaxBodyBytes)},
		{"DB_MAX_CONNS", "db-max-conns", "size of the database connection pool; 0 means flush workers + 2", (*intValue)(&c.DBMaxConns)},
		{"AUTO_MIGRATE", "auto-migrate", "apply pending migrations at start-up (under a lock, so replicas may start together)", (*boolValue)(&c.AutoMigrate)},
		{"SHUTDOWN_TIMEOUT", "shutdown-timeout", "on SIGTERM, how long to drain and answer accepted requests", (*durationValue)(&c.ShutdownTimeout)},
		{"LOG_LEVEL", "log-level", "debug, info, warn or error", (*stringValue)(&c.LogLevel)},
		{"LOG_FORMAT", "log-format", "json or text", (*stringValue)(&c.LogFormat)},
		{"REJECTED_RETENTION", "rejected-retention", "how long refused requests are kept in rejected_events (quarantine); 0 keeps them", (*durationValue)(&c.RejectedRetention)},
		{"TRUSTED_PROXIES", "trusted-proxies", "comma-separated proxy addresses or CIDRs whose X-Forwarded-For is believed for the client IP; unset trusts none", (*listValue)(&c.TrustedProxies)},
		{"TLS_CERT_FILE", "tls-cert-file", "serve HTTPS with this certificate (PEM); needs TLS_KEY_FILE", (*stringValue)(&c.TLSCertFile)},
		{"TLS_KEY_FILE", "tls-key-file", "the private key (PEM) of TLS_CERT_FILE", (*stringValue)(&c.TLSKeyFile)},
		{"READ_HEADER_TIMEOUT", "read-header-timeout", "how long a client may take to send its request headers (slowloris guard)", (*durationValue)(&c.ReadHeaderTimeout)},
		{"VIEWS_REFRESH_INTERVAL", "views-refresh-interval", "if above 0, refresh the per-event views (order_completed, …) this often; `segment-sink views refresh` does it once", (*durationValue)(&c.ViewsRefresh)},
		{"METRICS_ADDR", "metrics-addr", "if set, serve /metrics on this address instead of LISTEN_ADDR", (*stringValue)(&c.MetricsAddr)},
		{"PPROF_ADDR", "pprof-addr", "if set, serve Go's profiler (/debug/pprof/) on this address; keep it private", (*stringValue)(&c.PprofAddr)},
	}
}

// Defaults returns the configuration before any variable or flag is read.
func Defaults() Config {
	return Config{
		ListenAddr:        DefaultListenAddr,
		BatchMaxEvents:    DefaultBatchMaxEvents,
		BatchMaxWait:      DefaultBatchMaxWait,
		FlushWorkers:      DefaultFlushWorkers,
		MaxPendingEvents:  DefaultMaxPendingEvents,
		MaxPendingBytes:   DefaultMaxPendingBytes,
		AckTimeout:        DefaultAckTimeout,
		RejectedRetention: DefaultRejectedRetention,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		MaxBodyBytes:      DefaultMaxBodyBytes,
		AutoMigrate:       true,
		ShutdownTimeout:   DefaultShutdownTimeout,
		LogLevel:          DefaultLogLevel,
		LogFormat:         DefaultLogFormat,
	}
}

// Settings lists every setting with its default.
func Settings() []Setting {
	c := Defaults()
	return c.settings()
}

// Load reads the environment through getenv, then the flags in args, which override it. It
// returns the arguments left after the flags. With -h or --help it writes the usage to out and
// returns flag.ErrHelp. extra may add a command's own flags.
func Load(args []string, getenv func(string) string, name string, out io.Writer, extra ...func(*flag.FlagSet)) (Config, []string, error) {
	c := Defaults()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, add := range extra {
		add(fs)
	}
	for _, s := range c.settings() {
		if v := getenv(s.Env); v != "" {
			if err := s.value.Set(v); err != nil {
				// Only number, duration and bool settings can fail here; none holds a secret.
				return c, nil, fmt.Errorf("%s=%q: %w", s.Env, v, err)
			}
		}
		fs.Var(s.value, s.Flag, s.Usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, nil, err
		}
		return c, nil, fmt.Errorf("%w (see --help)", err)
	}
	return c, fs.Args(), nil
}

// Validate rejects settings the sink cannot run with, naming the variable.
func (c *Config) Validate() error {
	var errs []error
	bad := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}
	if c.DatabaseURL == "" {
		bad("DATABASE_URL", "is required (or --database-url), e.g. postgres://postgres@127.0.0.1:5432/segment_sink")
	}
	if c.ListenAddr == "" {
		bad("LISTEN_ADDR", "must not be empty")
	}
	if c.BatchMaxEvents < 1 {
		bad("BATCH_MAX_EVENTS", "must be at least 1, got %d", c.BatchMaxEvents)
	}
	if c.BatchMaxWait < 0 {
		bad("BATCH_MAX_WAIT", "must not be negative, got %s", c.BatchMaxWait)
	}
	if c.FlushWorkers < 1 {
		bad("FLUSH_WORKERS", "must be at least 1, got %d", c.FlushWorkers)
	}
	if c.MaxPendingEvents < 1 {
		bad("MAX_PENDING_EVENTS", "must be at least 1, got %d", c.MaxPendingEvents)
	}
	if c.MaxPendingBytes < 1 {
		bad("MAX_PENDING_BYTES", "must be at least 1, got %d", c.MaxPendingBytes)
	}
	if c.MaxBodyBytes < 1 {
		bad("MAX_BODY_BYTES", "must be at least 1, got %d", c.MaxBodyBytes)
	}
	// A request larger than what may wait in memory could only get in while nothing else waits,
	// which under load is never: the budget must hold the largest request.
	if c.MaxPendingBytes < c.MaxBodyBytes {
		bad("MAX_PENDING_BYTES", "must be at least MAX_BODY_BYTES (%d), got %d", c.MaxBodyBytes, c.MaxPendingBytes)
	}
	if c.MaxPendingEvents < MaxRequestEvents {
		bad("MAX_PENDING_EVENTS", "must hold the largest tracking API batch (%d events), got %d", MaxRequestEvents, c.MaxPendingEvents)
	}
	if c.AckTimeout <= 0 || c.AckTimeout >= SegmentTimeout {
		bad("ACK_TIMEOUT", "must be above 0 and under Segment's %s timeout, got %s", SegmentTimeout, c.AckTimeout)
	}
	if c.BatchMaxWait >= c.AckTimeout && c.AckTimeout > 0 {
		bad("BATCH_MAX_WAIT", "must be shorter than ACK_TIMEOUT (%s), got %s", c.AckTimeout, c.BatchMaxWait)
	}
	if c.ShutdownTimeout <= c.AckTimeout {
		bad("SHUTDOWN_TIMEOUT", "must be longer than ACK_TIMEOUT (%s) so accepted requests can be answered, got %s", c.AckTimeout, c.ShutdownTimeout)
	}
	if c.DBMaxConns != 0 && c.DBMaxConns <= c.FlushWorkers {
		bad("DB_MAX_CONNS", "must exceed FLUSH_WORKERS (%d), got %d", c.FlushWorkers, c.DBMaxConns)
	}
	if _, err := c.SlogLevel(); err != nil {
		bad("LOG_LEVEL", "%v", err)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLS_CERT_FILE", "and TLS_KEY_FILE must be set together")
	} else if c.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			bad("TLS_CERT_FILE", "cannot load the certificate and TLS_KEY_FILE: %v", err)
		}
	}
	for _, p := range c.TrustedProxies {
		if net.ParseIP(p) == nil {
			if _, _, err := net.ParseCIDR(p); err != nil {
				bad("TRUSTED_PROXIES", "%q is neither an IP address nor a CIDR", p)
			}
		}
	}
	if c.ReadHeaderTimeout <= 0 {
		bad("READ_HEADER_TIMEOUT", "must be above 0, got %s", c.ReadHeaderTimeout)
	}
	if c.ViewsRefresh < 0 {
		bad("VIEWS_REFRESH_INTERVAL", "must not be negative, got %s", c.ViewsRefresh)
	}
	if c.RejectedRetention < 0 {
		bad("REJECTED_RETENTION", "must not be negative, got %s", c.RejectedRetention)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "must be json or text, got %q", c.LogFormat)
	}
	return errors.Join(errs...)
}

// SlogLevel returns LOG_LEVEL as a slog.Level.
func (c *Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return l, nil
}

// PoolSize is DB_MAX_CONNS, or what the flush workers need when it is 0.
func (c *Config) PoolSize() int {
	if c.DBMaxConns > 0 {
		return c.DBMaxConns
	}
	return c.FlushWorkers + 2
}

// Usage writes the settings table for --help.
func Usage(w io.Writer) {
	for _, s := range Settings() {
		def := s.Default()
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(w, "  --%-20s %-20s %s (default %s)\n", s.Flag, s.Env, s.Usage, def)
	}
}

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type listValue []string

func (v *listValue) String() string { return strings.Join(*v, ",") }
func (v *listValue) Set(s string) error {
	*v = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*v = append(*v, part)
		}
	}
	return nil
}

type intValue int

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("must be a whole number")
	}
	*v = intValue(n)
	return nil
}

type int64Value int64

func (v *int64Value) String() string { return strconv.FormatInt(int64(*v), 10) }
func (v *int64Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("must be a whole number of bytes")
	}
	*v = int64Value(n)
	return nil
}

type durationValue time.Duration

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("must be a duration such as 500ms or 3s")
	}
	*v = durationValue(d)
	return nil
}

type boolValue bool

func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("must be true or false")
	}
	*v = boolValue(b)
	return nil
}
