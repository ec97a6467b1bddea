// Package store writes events into PostgreSQL with pgx: one transaction per flush, a binary COPY
// into a per-connection staging table, then one idempotent upsert per event table. It is the only
// package that knows pgx, and the only one that interprets PostgreSQL's errors.
package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/segment-sink/segment-sink/internal/event"
)

// DefaultConnectTimeout bounds how long opening a connection may take when DATABASE_URL does not
// say (connect_timeout). pgx's own default is two minutes, far past Segment's 5 s timeout.
const DefaultConnectTimeout = 2 * time.Second

// DefaultCopyThreshold is the flush size from which Write streams rows with COPY; smaller
// flushes send them as array parameters in a single round trip. Measured with `make bench` on
// 2 cores: single-event webhooks (flushes of 10-60 rows) ran ~30% faster with arrays, and
// 100-event batches ran as fast either way, COPY with a lower p99 and less memory.
const DefaultCopyThreshold = 256

// Options tune the store.
type Options struct {
	// MaxConns caps the pool; 0 keeps pgx's default (the greater of 4 and the number of CPUs).
	MaxConns int32
	// CopyThreshold overrides DefaultCopyThreshold (tests use it to exercise both paths).
	CopyThreshold int
}

// Store is segment-sink's PostgreSQL database.
type Store struct {
	copyFrom   int // flush size from which to COPY
	pool       *pgxpool.Pool
	db         *sql.DB // the same pool, for goose
	migrations *goose.Provider
}

// Open connects to the database at url. It fails when the URL is malformed or the server cannot
// be reached, so that a bad DATABASE_URL is reported at start-up.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message can quote the URL, password included: say only what is wrong with it.
		return nil, errors.New("parse database URL: not a valid PostgreSQL URL or key=value string")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.AfterConnect = createStagingTable
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	s := &Store{pool: pool, db: stdlib.OpenDBFromPool(pool), copyFrom: cmp.Or(opts.CopyThreshold, DefaultCopyThreshold)}
	if s.migrations, err = newMigrations(s.db); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases every connection.
func (s *Store) Close() {
	s.db.Close()
	s.pool.Close()
}

// Ready reports whether the database answers and its schema is fully migrated.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	pending, err := s.migrations.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("check schema version: %w", err)
	}
	if pending {
		return errors.New("database schema is not up to date: run `segment-sink migrate up`")
	}
	return nil
}

// stageTable receives each flush's rows by COPY. It is a temporary table, private to its
// connection, created once when the connection opens; ON COMMIT DELETE ROWS empties it at every
// commit, which also keeps it free of the dead rows that DELETE would leave (autovacuum never
// visits temporary tables).
const stageTable = "segment_sink_stage"

func createStagingTable(ctx context.Context, conn *pgx.Conn) error {
	defs := []string{"kind smallint NOT NULL"}
	for _, c := range columns {
		defs = append(defs, pgx.Identifier{c.name}.Sanitize()+" "+c.sqlType())
	}
	_, err := conn.Exec(ctx, "CREATE TEMP TABLE IF NOT EXISTS "+stageTable+" ("+strings.Join(defs, ", ")+") ON COMMIT DELETE ROWS")
	if err != nil {
		return fmt.Errorf("create staging table: %w", err)
	}
	return nil
}

// stageColumns are the staging table's columns, in COPY order. kind is the event.Type.
var stageColumns = func() []string {
	names := []string{"kind"}
	for _, c := range columns {
		names = append(names, c.name)
	}
	return names
}()

// The upserts, per event type: copyUpsert moves rows from the staging table, arrayUpsert reads
// them from one array parameter per column.
var copyUpsert, arrayUpsert = buildUpserts()

// buildUpserts writes the INSERT … SELECT … ON CONFLICT statements. A redelivery rewrites a row
// only when what the sender said about the event changed; sent_at, received_at and timestamp are
// left out of that comparison because they differ between retries of the same event (a retry is
// sent later, and a missing receivedAt is the sink's clock). Rows go in messageId order so that
// concurrent flushes, in this process or in replicas, lock rows in the same order and cannot
// deadlock.
func buildUpserts() (fromStage, fromArrays map[event.Type]*statement) {
	fromStage = make(map[event.Type]*statement, len(event.Types))
	fromArrays = make(map[event.Type]*statement, len(event.Types))
	for _, t := range event.Types {
		cols := tableColumns[t]
		quoted := make([]string, len(cols))
		params := make([]string, len(cols))
		set := make([]string, 0, len(cols))
		var mine, theirs []string
		for i, c := range cols {
			quoted[i] = pgx.Identifier{c.name}.Sanitize()
			params[i] = fmt.Sprintf("$%d::%s[]", i+1, c.sqlType())
			if c.name == "message_id" {
				continue
			}
			set = append(set, fmt.Sprintf("%s = excluded.%[1]s", quoted[i]))
			switch c.name {
			case "sent_at", "received_at", "timestamp":
				continue
			}
			mine = append(mine, "t."+quoted[i])
			theirs = append(theirs, "excluded."+quoted[i])
		}
		list := strings.Join(quoted, ", ")
		upsert := func(source string) string {
			return fmt.Sprintf(`INSERT INTO %s AS t (%s)
%s
ON CONFLICT (message_id) DO UPDATE SET %s, loaded_at = now()
WHERE (%s) IS DISTINCT FROM (%s)`,
				pgx.Identifier{t.Table()}.Sanitize(), list, source,
				strings.Join(set, ", "), strings.Join(mine, ", "), strings.Join(theirs, ", "))
		}
		what := "upsert " + t.Table()
		fromStage[t] = &statement{name: "segment_sink_stage_" + t.Table(), what: what, events: true,
			sql: upsert(fmt.Sprintf("SELECT %s FROM %s WHERE kind = %d ORDER BY message_id", list, stageTable, t))}
		fromArrays[t] = &statement{name: "segment_sink_arrays_" + t.Table(), what: what, events: true,
			sql: upsert("SELECT * FROM unnest(" + strings.Join(params, ", ") + ") ORDER BY 1")}
	}
	return fromStage, fromArrays
}

// Write stores events in one transaction: every event is committed, or none is. Events with the
// same type and messageId are collapsed first, the last one winning, because one statement may
// not upsert the same row twice. It returns how many events left the database unchanged
// (redeliveries, in this flush or of stored rows). An error wraps event.ErrUnstorable when
// PostgreSQL refused the data itself (retrying the same events fails again), and
// event.ErrUnavailable otherwise.
func (s *Store) Write(ctx context.Context, events []event.Event) (unchanged int, err error) {
	rows := collapse(events)
	var changed int64
	if len(rows) < s.copyFrom {
		changed, err = s.writeArrays(ctx, rows)
	} else {
		changed, err = s.writeCopy(ctx, rows)
	}
	if err != nil {
		return 0, classify(err)
	}
	return len(events) - int(changed), nil
}

// writeCopy streams the rows with a binary COPY into the connection's staging table, then moves
// them into each table with one upsert per table, in one transaction. It returns the rows
// inserted or changed.
func (s *Store) writeCopy(ctx context.Context, rows []*event.Event) (changed int64, err error) {
	var present [event.Alias + 1]bool
	for _, e := range rows {
		present[e.Type] = true
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageTable}, stageColumns, &stageRows{rows: rows}); err != nil {
			return fmt.Errorf("copy into staging table: %w", err)
		}
		f := getFlush()
		defer flushes.Put(f)
		for _, t := range event.Types {
			if present[t] {
				f.queue(copyUpsert[t])
			}
		}
		f.queueProfiles(rows)
		changed, err = f.run(ctx, tx.Conn())
		return err
	})
	return changed, err
}

// collapse returns the events sorted by type and messageId, keeping only the last of each
// (type, messageId) in arrival order.
func collapse(events []event.Event) []*event.Event {
	rows := make([]*event.Event, len(events))
	for i := range events {
		rows[i] = &events[i]
	}
	// A stable sort keeps arrival order within equal keys, so the last of a run is the latest.
	slices.SortStableFunc(rows, func(a, b *event.Event) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), strings.Compare(a.MessageID, b.MessageID))
	})
	out := rows[:0]
	for i, e := range rows {
		if i+1 < len(rows) && rows[i+1].Type == e.Type && rows[i+1].MessageID == e.MessageID {
			continue
		}
		out = append(out, e)
	}
	return out
}

// classify sorts a write error into unstorable data and everything else. SQLSTATE classes 22
// (data exception: bad jsonb, bad encoding), 23 (integrity) and 54 (program limit: an index row
// or a nesting too large) are about the rows; connection loss, timeouts, deadlocks and missing
// tables are about the database, and retrying later may succeed.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "22", "23", "54":
			return fmt.Errorf("%w: %w", event.ErrUnstorable, err)
		}
	}
	return fmt.Errorf("%w: %w", event.ErrUnavailable, err)
}
