package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segment-sink/segment-sink/internal/dbtest"
	"github.com/segment-sink/segment-sink/internal/httpapi"
)

// sink is a running segment-sink, started through run on 127.0.0.1:0.
type sink struct {
	url    string
	dbURL  string
	cancel context.CancelFunc
	done   chan error
	logs   *lockedBuffer
}

// startSink runs the sink against a fresh database with env on top of the test defaults.
func startSink(t *testing.T, env map[string]string) *sink {
	t.Helper()
	vars := map[string]string{
		"DATABASE_URL": dbtest.New(t),
		"LISTEN_ADDR":  "127.0.0.1:0",
		"LOG_FORMAT":   "text",
		"LOG_LEVEL":    "debug",
	}
	for k, v := range env {
		vars[k] = v
	}
	return startSinkWith(t, vars)
}

func startSinkWith(t *testing.T, vars map[string]string) *sink {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &sink{dbURL: vars["DATABASE_URL"], cancel: cancel, done: make(chan error, 1), logs: &lockedBuffer{}}
	out, in := io.Pipe()
	go func() {
		s.done <- run(ctx, nil, func(k string) string { return vars[k] }, in, s.logs)
		in.Close()
	}()
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "segment-sink listening on "); ok {
				listening <- addr
			}
		}
	}()
	select {
	case s.url = <-listening:
	case err := <-s.done:
		t.Fatalf("sink exited at start-up: %v\nlogs:\n%s", err, s.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("sink did not start\nlogs:\n%s", s.logs)
	}
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("sink logs:\n%s", s.logs)
		}
	})
	return s
}

// stop sends the equivalent of SIGTERM and waits for run to return.
func (s *sink) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // later calls see the same result
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not stop within 30s")
		return nil
	}
}

// post sends body to path, signed with secret when it is not empty.
func (s *sink) post(t *testing.T, path, secret, body string) (int, map[string]any) {
	t.Helper()
	header := http.Header{}
	if secret != "" {
		header.Set("X-Signature", httpapi.Sign(secret, []byte(body)))
	}
	return s.do(t, path, header, body)
}

func (s *sink) do(t *testing.T, path string, header http.Header, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: answer %d is not JSON: %q", path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func (s *sink) get(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, out
}

// db opens a connection to the sink's database.
func (s *sink) db(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// rowCount counts the rows of every event table.
func rowCount(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM tracks) + (SELECT count(*) FROM identifies)
		+ (SELECT count(*) FROM pages) + (SELECT count(*) FROM screens) + (SELECT count(*) FROM groups)
		+ (SELECT count(*) FROM aliases)`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func queryInt(t *testing.T, conn *pgx.Conn, query string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// trackEvent is a realistic signed-webhook track event.
func trackEvent(messageID, userID string) string {
	return fmt.Sprintf(`{"type":"track","messageId":%q,"userId":%q,"event":"Order Completed",
"properties":{"revenue":42.5,"currency":"EUR"},"context":{"ip":"203.0.113.9","library":{"name":"analytics.js","version":"4.1.0"}},
"timestamp":"2024-05-01T10:00:00.000Z","receivedAt":"2024-05-01T10:00:01.000Z","sentAt":"2024-05-01T10:00:00.500Z"}`, messageID, userID)
}
