// Package dbtest gives each test a fresh, fully migrated PostgreSQL database of its own.
//
// The server comes from TEST_DATABASE_URL when it is set (CI, or any Postgres you run), else
// from a throw-away testcontainers-go container (a laptop with Docker), else the test fails and
// says how to provide one. Tests never skip for want of a database.
//
// The schema is migrated once, into a template database named after a hash of the migrations;
// each test then gets `CREATE DATABASE … TEMPLATE` (a file copy, a few milliseconds) and drops it
// when it ends.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/segment-sink/segment-sink/internal/store"
	"github.com/segment-sink/segment-sink/migrations"
)

// EnvURL names the variable that points the tests at a PostgreSQL server. Its user must be
// allowed to create databases.
const EnvURL = "TEST_DATABASE_URL"

var (
	setupOnce sync.Once
	serverURL string // the maintenance database of the server under test
	template  string // the migrated template database
	setupErr  error
)

// New creates a fresh, migrated database for this test, drops it when the test ends, and
// returns its URL.
func New(t testing.TB) string {
	t.Helper()
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("dbtest: %v", setupErr)
	}
	name := "segsink_test_" + randomHex(6)
	admin := connect(t, serverURL)
	defer admin.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, template)); err != nil {
		t.Fatalf("dbtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// No t.Helper here: a fuzz test's cleanup may not call it.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, serverURL)
		if err == nil {
			defer admin.Close(context.Background())
			_, err = admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name))
		}
		if err != nil {
			t.Errorf("dbtest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(serverURL, name)
}

// ServerURL returns the URL of the server's maintenance database, for tests that need to act on
// the server itself (terminate connections, say).
func ServerURL(t testing.TB) string {
	t.Helper()
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("dbtest: %v", setupErr)
	}
	return serverURL
}

func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	serverURL = os.Getenv(EnvURL)
	if serverURL == "" {
		c, err := postgres.Run(ctx, "postgres:16-alpine",
			postgres.WithDatabase("postgres"), postgres.WithUsername("postgres"),
			postgres.WithPassword("postgres"), postgres.BasicWaitStrategies())
		if err != nil {
			return fmt.Errorf("no PostgreSQL for the tests: set %s (for example "+
				"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), or run Docker so that "+
				"testcontainers can start one: %w", EnvURL, err)
		}
		if serverURL, err = c.ConnectionString(ctx, "sslmode=disable"); err != nil {
			return fmt.Errorf("testcontainers connection string: %w", err)
		}
	}
	sum, err := migrationsHash()
	if err != nil {
		return err
	}
	template = "segsink_tmpl_" + sum
	return createTemplate(ctx)
}

// createTemplate migrates the template once per server and migration set. An advisory lock
// serialises the test binaries of several packages, which `go test ./...` runs at once.
func createTemplate(ctx context.Context) error {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", EnvURL, err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(hashtext('segment-sink dbtest'))"); err != nil {
		return fmt.Errorf("lock template: %w", err)
	}
	defer admin.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext('segment-sink dbtest'))")

	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", template).Scan(&exists); err != nil {
		return fmt.Errorf("look for template: %w", err)
	}
	if exists {
		return nil
	}
	building := template + "_building"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop half-built template: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	s, err := store.Open(ctx, withDatabase(serverURL, building), store.Options{})
	if err != nil {
		return fmt.Errorf("open template: %w", err)
	}
	_, err = s.MigrateUp(ctx)
	s.Close()
	if err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	// Renamed only once complete, so a crash mid-migration never leaves a broken template.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+building+" RENAME TO "+template); err != nil {
		return fmt.Errorf("rename template: %w", err)
	}
	return nil
}

func migrationsHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)[:6]), nil
}

func connect(t testing.TB, u string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("dbtest: connect: %v", err)
	}
	return conn
}

// withDatabase returns u pointing at database name instead.
func withDatabase(u, name string) string {
	parsed, err := url.Parse(u)
	if err != nil || parsed.Scheme == "" {
		// A key=value connection string: a later dbname wins.
		return u + " dbname=" + name
	}
	parsed.Path = "/" + name
	return parsed.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
