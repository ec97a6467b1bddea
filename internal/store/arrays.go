package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/segment-sink/segment-sink/internal/event"
)

// statement is one of the statements a flush runs, prepared once per connection under name.
type statement struct {
	name, sql string
	// what it writes, for errors.
	what string
	// events says whether the rows it changes are events (counted by Write), not users or accounts.
	events bool
}

// queued is a statement with its parameters, params.ends[from:to].
type queued struct {
	*statement
	from, to int
}

// flush is the statements of one flush and their encoded parameters.
type flush struct {
	params
	queued []queued
}

var flushes = sync.Pool{New: func() any { return new(flush) }}

func getFlush() *flush {
	f := flushes.Get().(*flush)
	f.reset()
	f.queued = f.queued[:0]
	return f
}

// queue adds a statement whose parameters were encoded since the last one.
func (f *flush) queue(s *statement) {
	from := 0
	if n := len(f.queued); n > 0 {
		from = f.queued[n-1].to
	}
	f.queued = append(f.queued, queued{statement: s, from: from, to: len(f.ends)})
}

// run sends every queued statement in one round trip on conn, which runs them in one
// transaction (the open one, or an implicit one), and returns the event rows inserted or changed.
func (f *flush) run(ctx context.Context, conn *pgx.Conn) (changed int64, err error) {
	values := f.values()
	batch := &pgconn.Batch{}
	for _, q := range f.queued {
		// Prepared on the connection's first flush, then taken from pgx's cache by name.
		sd, err := conn.Prepare(ctx, q.name, q.sql)
		if err != nil {
			return 0, fmt.Errorf("prepare %s: %w", q.what, err)
		}
		batch.ExecStatement(sd, values[q.from:q.to], binaryFormat, nil)
	}
	results := conn.PgConn().ExecBatch(ctx, batch)
	i := 0
	for ; results.NextResult(); i++ {
		tag, err := results.ResultReader().Close()
		if err != nil {
			results.Close()
			return 0, f.failed(ctx, conn, i, err)
		}
		if f.queued[i].events {
			changed += tag.RowsAffected()
		}
	}
	if err := results.Close(); err != nil {
		// An error before any result of statement i (binding its parameters) ends here.
		return 0, f.failed(ctx, conn, i, err)
	}
	return changed, nil
}

// invalidStatementName is SQLSTATE 26000: the prepared statement does not exist.
const invalidStatementName = "26000"

// failed names the statement an error came from. When the server no longer knows a prepared
// statement (DEALLOCATE or DISCARD ALL on the connection, by an administrator or a pooler), the
// connection is closed: the pool replaces it, and the retry prepares every statement afresh on a
// clean session (deallocating instead could not run inside a failed COPY transaction).
func (f *flush) failed(ctx context.Context, conn *pgx.Conn, i int, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == invalidStatementName {
		_ = conn.Close(ctx)
	}
	if i < len(f.queued) {
		return fmt.Errorf("%s: %w", f.queued[i].what, err)
	}
	return err
}

// binaryFormat says every parameter is in binary format.
var binaryFormat = []int16{pgtype.BinaryFormatCode}

// writeArrays writes the rows in one round trip: one upsert per table, each reading its rows
// from array parameters with unnest, all in one pipelined batch, which PostgreSQL runs as one
// implicit transaction. Rows arrive sorted by type (collapse sorts them). It returns the rows
// inserted or changed.
func (s *Store) writeArrays(ctx context.Context, rows []*event.Event) (changed int64, err error) {
	f := getFlush()
	defer flushes.Put(f)
	for start := 0; start < len(rows); {
		t := rows[start].Type
		end := start
		for end < len(rows) && rows[end].Type == t {
			end++
		}
		f.eventArrays(t, rows[start:end])
		f.queue(arrayUpsert[t])
		start = end
	}
	f.queueProfiles(rows)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	return f.run(ctx, conn.Conn())
}

// eventArrays encodes rows of one type as one array per column of its table.
func (p *params) eventArrays(t event.Type, rows []*event.Event) {
	for _, c := range tableColumns[t] {
		switch {
		case c.text != nil:
			p.array(textOID, len(rows))
			for _, e := range rows {
				p.text(c.text(e))
			}
		case c.time != nil:
			p.array(timestamptzOID, len(rows))
			for _, e := range rows {
				p.time(c.time(e))
			}
		default:
			p.array(jsonbOID, len(rows))
			for _, e := range rows {
				p.json(c.json(e))
			}
		}
		p.end()
	}
}
