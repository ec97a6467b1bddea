package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/segment-sink/segment-sink/internal/event"
)

// columnTypes are the SQL types of the event tables' columns, for unnest's array parameters.
var columnTypes = map[string]string{
	"message_id": "text", "user_id": "text", "anonymous_id": "text", "timestamp": "timestamptz",
	"original_timestamp": "timestamptz", "sent_at": "timestamptz", "received_at": "timestamptz",
	"context": "jsonb", "integrations": "jsonb", "extra": "jsonb", "event": "text", "properties": "jsonb",
	"traits": "jsonb", "name": "text", "category": "text", "group_id": "text", "previous_id": "text",
}

// writeArrays writes the rows in one round trip: one upsert per table, each reading its rows
// from array parameters with unnest, all in one pipelined batch, which PostgreSQL runs as one
// implicit transaction. Rows arrive sorted by type (collapse sorts them). It returns the rows
// inserted or changed.
func (s *Store) writeArrays(ctx context.Context, rows []*event.Event) (changed int64, err error) {
	batch := &pgx.Batch{}
	var tables []event.Type
	for start := 0; start < len(rows); {
		t := rows[start].Type
		end := start
		for end < len(rows) && rows[end].Type == t {
			end++
		}
		batch.Queue(arrayUpsert[t], arrays(t, rows[start:end])...)
		tables = append(tables, t)
		start = end
	}
	profiles := queueProfiles(batch, rows)
	results := s.pool.SendBatch(ctx, batch)
	for _, t := range tables {
		tag, err := results.Exec()
		if err != nil {
			results.Close()
			return 0, fmt.Errorf("upsert %s: %w", t.Table(), err)
		}
		changed += tag.RowsAffected()
	}
	for range profiles {
		if _, err := results.Exec(); err != nil {
			results.Close()
			return 0, fmt.Errorf("update users and accounts: %w", err)
		}
	}
	return changed, results.Close()
}

// arrays turns rows of one type into one array per column of its table.
func arrays(t event.Type, rows []*event.Event) []any {
	n := len(rows)
	ids := make([]string, n)
	users, anons := make([]pgtype.Text, n), make([]pgtype.Text, n)
	ts, recv := make([]time.Time, n), make([]time.Time, n)
	orig, sent := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	ctxs, integs, extras := make([]json.RawMessage, n), make([]json.RawMessage, n), make([]json.RawMessage, n)
	for i, e := range rows {
		ids[i] = e.MessageID
		users[i] = pgtype.Text{String: e.UserID, Valid: e.UserID != ""}
		anons[i] = pgtype.Text{String: e.AnonymousID, Valid: e.AnonymousID != ""}
		ts[i], recv[i] = e.Timestamp, e.ReceivedAt
		orig[i] = pgtype.Timestamptz{Time: e.OriginalTimestamp, Valid: !e.OriginalTimestamp.IsZero()}
		sent[i] = pgtype.Timestamptz{Time: e.SentAt, Valid: !e.SentAt.IsZero()}
		ctxs[i], integs[i], extras[i] = e.Context, e.Integrations, e.Extra
	}
	out := []any{ids, users, anons, ts, orig, sent, recv, ctxs, integs, extras}
	texts := func(get func(*event.Event) string) []pgtype.Text {
		v := make([]pgtype.Text, n)
		for i, e := range rows {
			s := get(e)
			v[i] = pgtype.Text{String: s, Valid: s != ""}
		}
		return v
	}
	raws := func(get func(*event.Event) json.RawMessage) []json.RawMessage {
		v := make([]json.RawMessage, n)
		for i, e := range rows {
			v[i] = get(e)
		}
		return v
	}
	switch t {
	case event.Track:
		out = append(out, texts(func(e *event.Event) string { return e.Event }), raws(func(e *event.Event) json.RawMessage { return e.Properties }))
	case event.Identify:
		out = append(out, raws(func(e *event.Event) json.RawMessage { return e.Traits }))
	case event.Page, event.Screen:
		out = append(out, texts(func(e *event.Event) string { return e.Name }), texts(func(e *event.Event) string { return e.Category }),
			raws(func(e *event.Event) json.RawMessage { return e.Properties }))
	case event.Group:
		out = append(out, texts(func(e *event.Event) string { return e.GroupID }), raws(func(e *event.Event) json.RawMessage { return e.Traits }))
	case event.Alias:
		out = append(out, texts(func(e *event.Event) string { return e.PreviousID }))
	}
	return out
}
