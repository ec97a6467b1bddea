package config

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLoadReadsEnvironmentThenFlags(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"DATABASE_URL":     "postgres://env",
		"SHARED_SECRET":    " one , two,,",
		"BATCH_MAX_EVENTS": "500",
		"ACK_TIMEOUT":      "2s",
		"AUTO_MIGRATE":     "false",
	}
	c, rest, err := Load([]string{"--batch-max-events", "700", "--listen-addr=127.0.0.1:9", "extra"}, env(vars), "t", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "postgres://env" || c.BatchMaxEvents != 700 || c.ListenAddr != "127.0.0.1:9" ||
		c.AckTimeout != 2*time.Second || c.AutoMigrate || strings.Join(c.SharedSecrets, "|") != "one|two" {
		t.Errorf("loaded %+v", c)
	}
	if len(rest) != 1 || rest[0] != "extra" {
		t.Errorf("rest = %q", rest)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestDefaultsAreValidGivenADatabase(t *testing.T) {
	t.Parallel()
	c := Defaults()
	c.DatabaseURL = "postgres://x"
	if err := c.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestLoadAndValidateNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"missing database", map[string]string{}, "DATABASE_URL: is required"},
		{"not a number", map[string]string{"FLUSH_WORKERS": "two"}, `FLUSH_WORKERS="two": must be a whole number`},
		{"not a duration", map[string]string{"BATCH_MAX_WAIT": "5"}, "BATCH_MAX_WAIT"},
		{"not a bool", map[string]string{"AUTO_MIGRATE": "maybe"}, "AUTO_MIGRATE"},
		{"zero batch", map[string]string{"BATCH_MAX_EVENTS": "0"}, "BATCH_MAX_EVENTS: must be at least 1"},
		{"ack timeout at Segment's", map[string]string{"ACK_TIMEOUT": "5s"}, "ACK_TIMEOUT: must be above 0 and under"},
		{"wait past the ack timeout", map[string]string{"BATCH_MAX_WAIT": "4s"}, "BATCH_MAX_WAIT: must be shorter than ACK_TIMEOUT"},
		{"shutdown shorter than ack", map[string]string{"SHUTDOWN_TIMEOUT": "1s"}, "SHUTDOWN_TIMEOUT"},
		{"pool too small", map[string]string{"FLUSH_WORKERS": "4", "DB_MAX_CONNS": "4"}, "DB_MAX_CONNS: must exceed FLUSH_WORKERS"},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"bad format", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"negative pending", map[string]string{"MAX_PENDING_EVENTS": "-1"}, "MAX_PENDING_EVENTS"},
		{"budget smaller than a batch", map[string]string{"MAX_PENDING_EVENTS": "100"}, "MAX_PENDING_EVENTS: must hold the largest tracking API batch"},
		{"budget smaller than a body", map[string]string{"MAX_PENDING_BYTES": "1000"}, "MAX_PENDING_BYTES: must be at least MAX_BODY_BYTES"},
		{"zero body", map[string]string{"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"},
		{"certificate without key", map[string]string{"TLS_CERT_FILE": "cert.pem"}, "TLS_CERT_FILE: and TLS_KEY_FILE must be set together"},
		{"unreadable certificate", map[string]string{"TLS_CERT_FILE": "/nonexistent.pem", "TLS_KEY_FILE": "/nonexistent.key"}, "TLS_CERT_FILE: cannot load"},
		{"proxy not an address", map[string]string{"TRUSTED_PROXIES": "10.0.0.1,proxy.internal"}, `TRUSTED_PROXIES: "proxy.internal"`},
		{"negative retention", map[string]string{"REJECTED_RETENTION": "-1h"}, "REJECTED_RETENTION"},
		{"zero header timeout", map[string]string{"READ_HEADER_TIMEOUT": "0s"}, "READ_HEADER_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, ok := tt.vars["DATABASE_URL"]; !ok && tt.name != "missing database" {
				tt.vars["DATABASE_URL"] = "postgres://x"
			}
			c, _, err := Load(nil, env(tt.vars), "t", io.Discard)
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	_, _, err := Load([]string{"--help"}, env(nil), "t", io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	var b strings.Builder
	Usage(&b)
	for _, s := range Settings() {
		if !strings.Contains(b.String(), s.Env) || !strings.Contains(b.String(), "--"+s.Flag) {
			t.Errorf("usage misses %s / --%s", s.Env, s.Flag)
		}
	}
}
