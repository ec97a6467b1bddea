package store

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/segment-sink/segment-sink/internal/event"
)

// column is a column of the event tables and how to read it from an event: exactly one of
// text, time and json is set. An absent value ("", the zero time, nil) is SQL NULL. This table
// is the only place that maps events to columns: COPY rows, array parameters and RowValues are
// all read through it.
type column struct {
	name string
	text func(*event.Event) string
	time func(*event.Event) time.Time
	json func(*event.Event) json.RawMessage
}

// sqlType is the column's PostgreSQL type.
func (c column) sqlType() string {
	switch {
	case c.text != nil:
		return "text"
	case c.time != nil:
		return "timestamptz"
	}
	return "jsonb"
}

// value returns the column's value in e for pgx.
func (c column) value(e *event.Event) any {
	switch {
	case c.text != nil:
		if s := c.text(e); s != "" {
			return s
		}
	case c.time != nil:
		if t := c.time(e); !t.IsZero() {
			return t
		}
	default:
		if raw := c.json(e); raw != nil {
			return raw // pgx sends json.RawMessage to jsonb as it is, without a copy
		}
	}
	return nil
}

// columns are every event table's columns but the ones PostgreSQL fills (loaded_at, generated
// context_* columns), in the staging table's order.
var columns = []column{
	{name: "message_id", text: func(e *event.Event) string { return e.MessageID }},
	{name: "user_id", text: func(e *event.Event) string { return e.UserID }},
	{name: "anonymous_id", text: func(e *event.Event) string { return e.AnonymousID }},
	{name: "timestamp", time: func(e *event.Event) time.Time { return e.Timestamp }},
	{name: "original_timestamp", time: func(e *event.Event) time.Time { return e.OriginalTimestamp }},
	{name: "sent_at", time: func(e *event.Event) time.Time { return e.SentAt }},
	{name: "received_at", time: func(e *event.Event) time.Time { return e.ReceivedAt }},
	{name: "context", json: func(e *event.Event) json.RawMessage { return e.Context }},
	{name: "integrations", json: func(e *event.Event) json.RawMessage { return e.Integrations }},
	{name: "extra", json: func(e *event.Event) json.RawMessage { return e.Extra }},
	{name: "event", text: func(e *event.Event) string { return e.Event }},
	{name: "properties", json: func(e *event.Event) json.RawMessage { return e.Properties }},
	{name: "traits", json: func(e *event.Event) json.RawMessage { return e.Traits }},
	{name: "name", text: func(e *event.Event) string { return e.Name }},
	{name: "category", text: func(e *event.Event) string { return e.Category }},
	{name: "group_id", text: func(e *event.Event) string { return e.GroupID }},
	{name: "previous_id", text: func(e *event.Event) string { return e.PreviousID }},
}

// commonColumns is how many of columns, from the first, every event table has.
const commonColumns = 10

// typeColumns are the columns only one event type has.
var typeColumns = map[event.Type][]string{
	event.Track:    {"event", "properties"},
	event.Identify: {"traits"},
	event.Page:     {"name", "category", "properties"},
	event.Screen:   {"name", "category", "properties"},
	event.Group:    {"group_id", "traits"},
	event.Alias:    {"previous_id"},
}

// tableColumns are each event type's table's columns, in TableColumns order.
var tableColumns = func() map[event.Type][]column {
	m := make(map[event.Type][]column, len(event.Types))
	for _, t := range event.Types {
		cols := slices.Clone(columns[:commonColumns])
		for _, name := range typeColumns[t] {
			i := slices.IndexFunc(columns, func(c column) bool { return c.name == name })
			cols = append(cols, columns[i])
		}
		m[t] = cols
	}
	return m
}()

// TableColumns returns the columns of an event type's table that RowValues fills, in order.
// It is for tools that write the tables directly, such as the benchmark's baselines.
func TableColumns(t event.Type) []string {
	names := make([]string, len(tableColumns[t]))
	for i, c := range tableColumns[t] {
		names[i] = c.name
	}
	return names
}

// RowValues returns an event's values in TableColumns order, with absent fields as NULL.
func RowValues(e *event.Event) []any {
	cols := tableColumns[e.Type]
	row := make([]any, len(cols))
	for i, c := range cols {
		row[i] = c.value(e)
	}
	return row
}

// stageRows feeds COPY into the staging table straight from the events, one reused row at a
// time: the event's type, then every column.
type stageRows struct {
	rows []*event.Event
	i    int
	row  []any
}

func (r *stageRows) Next() bool {
	r.i++
	return r.i <= len(r.rows)
}

func (r *stageRows) Err() error { return nil }

func (r *stageRows) Values() ([]any, error) {
	e := r.rows[r.i-1]
	if r.row == nil {
		r.row = make([]any, 1+len(columns))
	}
	r.row[0] = int16(e.Type)
	for i, c := range columns {
		r.row[1+i] = c.value(e)
	}
	return r.row, nil
}
