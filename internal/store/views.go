package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// EventView is a per-event view: the tracks of one event name, its properties as columns.
type EventView struct {
	Name    string
	Event   string
	Columns []ViewColumn
}

// ViewColumn is one property exposed by an EventView.
type ViewColumn struct {
	Name, Property, Type string
}

// maxIdentifier is PostgreSQL's limit on a name, in bytes; longer names are cut silently, so
// names are made unique within it here.
const maxIdentifier = 63

// maxViewColumns keeps a view of an event with thousands of property names under PostgreSQL's
// limit of 1664 columns; the most frequent properties are kept.
const maxViewColumns = 1000

// viewBaseColumns are the columns every event view starts with, as Segment's per-event tables
// have them: id, the ids and times, the original name in event_text, the slug in event, and the
// flattened context.
var viewBaseColumns = []string{
	"message_id AS id", "user_id", "anonymous_id", `"timestamp"`, "original_timestamp", "sent_at",
	"received_at", "event AS event_text", "context_ip", "context_user_agent", "context_locale",
	"context_page_url", "context_page_path", "context_page_referrer", "context_page_title",
	"context_library_name", "context_library_version", "context_campaign_name",
	"context_campaign_source", "context_campaign_medium", "context_campaign_term",
	"context_campaign_content",
}

// RefreshEventViews creates or replaces one view per track event name (Order Completed ->
// order_completed), exposing its properties as typed columns: numeric when every value is a
// number, boolean when every value is a boolean, jsonb when any is an object or array, text
// otherwise. Names are lowercase snake_case, unique within PostgreSQL's 63 bytes, and never
// those of another relation; a view keeps its name from one refresh to the next. Replicas may
// refresh at once: an advisory lock serialises them.
func (s *Store) RefreshEventViews(ctx context.Context) ([]EventView, error) {
	var views []EventView
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('segment-sink event views'))`); err != nil {
			return fmt.Errorf("lock event views: %w", err)
		}
		// quoteLiteral relies on it: event names and property keys come from senders.
		if _, err := tx.Exec(ctx, `SET LOCAL standard_conforming_strings = on`); err != nil {
			return fmt.Errorf("set standard_conforming_strings: %w", err)
		}
		events, err := eventProperties(ctx, tx)
		if err != nil {
			return err
		}
		taken, mine, err := relationNames(ctx, tx)
		if err != nil {
			return err
		}
		for _, ev := range slices.Sorted(maps.Keys(events)) {
			name, ok := mine[ev]
			if !ok {
				name = uniqueName(snake(ev, "e_"), ev, taken)
				taken[name] = true
			}
			v := EventView{Name: name, Event: ev, Columns: viewColumns(events[ev])}
			if err := createView(ctx, tx, v); err != nil {
				return err
			}
			views = append(views, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("refresh event views: %w", err)
	}
	return views, nil
}

// propertyKind is how often a property held each JSON type.
type propertyKind struct {
	key   string
	kinds map[string]int64
	total int64
}

// eventProperties reads, in one pass over tracks, every event name and its properties' types.
func eventProperties(ctx context.Context, tx pgx.Tx) (map[string][]*propertyKind, error) {
	rows, err := tx.Query(ctx, `SELECT t.event, p.key, jsonb_typeof(p.value), count(*)
		FROM tracks t LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(t.properties) = 'object' THEN t.properties END) p ON true
		GROUP BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("read track properties: %w", err)
	}
	defer rows.Close()
	events := map[string][]*propertyKind{}
	index := map[[2]string]*propertyKind{}
	for rows.Next() {
		var ev string
		var key, kind *string
		var n int64
		if err := rows.Scan(&ev, &key, &kind, &n); err != nil {
			return nil, err
		}
		if _, ok := events[ev]; !ok {
			events[ev] = nil
		}
		if key == nil {
			continue // an event without properties
		}
		p, ok := index[[2]string{ev, *key}]
		if !ok {
			p = &propertyKind{key: *key, kinds: map[string]int64{}}
			index[[2]string{ev, *key}] = p
			events[ev] = append(events[ev], p)
		}
		p.kinds[*kind] += n
		p.total += n
	}
	return events, rows.Err()
}

// relationNames returns every relation name in the schema, and the names of the views this
// refresh made before, by event.
func relationNames(ctx context.Context, tx pgx.Tx) (taken map[string]bool, mine map[string]string, err error) {
	taken, mine = map[string]bool{}, map[string]string{}
	rows, err := tx.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace`)
	if err != nil {
		return nil, nil, fmt.Errorf("list relations: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	for _, n := range names {
		taken[n] = true
	}
	rows, err = tx.Query(ctx, `SELECT event, view_name FROM event_views`)
	if err != nil {
		return nil, nil, fmt.Errorf("list event views: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ev, name string
		if err := rows.Scan(&ev, &name); err != nil {
			return nil, nil, err
		}
		mine[ev] = name
	}
	return taken, mine, rows.Err()
}

// viewColumns picks the columns of a view from its properties' types, most frequent first.
func viewColumns(props []*propertyKind) []ViewColumn {
	props = slices.Clone(props)
	slices.SortStableFunc(props, func(a, b *propertyKind) int {
		if a.total != b.total {
			return int(b.total - a.total)
		}
		return strings.Compare(a.key, b.key)
	})
	if len(props) > maxViewColumns {
		props = props[:maxViewColumns]
	}
	taken := map[string]bool{"id": true, "event": true}
	for _, c := range viewBaseColumns {
		name := c
		if i := strings.LastIndex(c, " AS "); i >= 0 {
			name = c[i+4:]
		}
		taken[strings.Trim(name, `"`)] = true
	}
	cols := make([]ViewColumn, 0, len(props))
	for _, p := range props {
		name := snake(p.key, "p_")
		if taken[name] {
			name = snake("property_"+p.key, "p_")
		}
		name = uniqueName(name, p.key, taken)
		taken[name] = true
		cols = append(cols, ViewColumn{Name: name, Property: p.key, Type: sqlType(p.kinds)})
	}
	slices.SortFunc(cols, func(a, b ViewColumn) int { return strings.Compare(a.Name, b.Name) })
	return cols
}

// sqlType is the column type for a property that held these JSON types (nulls aside).
func sqlType(kinds map[string]int64) string {
	delete(kinds, "null")
	switch {
	case len(kinds) == 0:
		return "text"
	case kinds["object"] > 0 || kinds["array"] > 0:
		return "jsonb"
	case len(kinds) == 1 && kinds["number"] > 0:
		return "numeric"
	case len(kinds) == 1 && kinds["boolean"] > 0:
		return "boolean"
	default:
		return "text"
	}
}

func createView(ctx context.Context, tx pgx.Tx, v EventView) error {
	cols := slices.Clone(viewBaseColumns)
	cols = append(cols, quoteLiteral(snake(v.Event, "e_"))+" AS event")
	for _, c := range v.Columns {
		key := quoteLiteral(c.Property)
		var expr string
		switch c.Type {
		case "numeric", "boolean":
			// Typed only when the value has the type: a later event sending another type reads
			// as NULL there instead of failing the whole query.
			kind := map[string]string{"numeric": "number", "boolean": "boolean"}[c.Type]
			expr = fmt.Sprintf("CASE WHEN jsonb_typeof(properties -> %s) = '%s' THEN (properties ->> %s)::%s END", key, kind, key, c.Type)
		case "jsonb":
			expr = "properties -> " + key
		default:
			expr = "properties ->> " + key
		}
		cols = append(cols, expr+" AS "+pgx.Identifier{c.Name}.Sanitize())
	}
	name := pgx.Identifier{v.Name}.Sanitize()
	stmts := []string{
		"DROP VIEW IF EXISTS " + name, // columns may have changed; CREATE OR REPLACE cannot drop any
		fmt.Sprintf("CREATE VIEW %s AS SELECT %s FROM tracks WHERE event = %s", name, strings.Join(cols, ", "), quoteLiteral(v.Event)),
		fmt.Sprintf("COMMENT ON VIEW %s IS %s", name, quoteLiteral("segment-sink: track events named "+v.Event+"; made by `segment-sink views refresh`")),
	}
	for _, stmt := range stmts {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("view %s for %q: %w", v.Name, v.Event, err)
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO event_views (view_name, event, columns) VALUES ($1, $2, $3)
		ON CONFLICT (event) DO UPDATE SET columns = excluded.columns, refreshed_at = now()`, v.Name, v.Event, len(v.Columns))
	if err != nil {
		return fmt.Errorf("record view %s: %w", v.Name, err)
	}
	return nil
}

// snake makes s a lowercase snake_case identifier: letters and digits kept, everything else one
// underscore. One that would not start with a letter or underscore gets prefix.
func snake(s, prefix string) string {
	var b strings.Builder
	underscore := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 0x7f && r != 0xfffd {
			b.WriteRune(r)
			underscore = false
		} else if !underscore && b.Len() > 0 {
			b.WriteByte('_')
			underscore = true
		}
	}
	out := strings.TrimRight(b.String(), "_")
	if out == "" || out[0] >= '0' && out[0] <= '9' {
		out = prefix + out
	}
	return out
}

// uniqueName cuts name to PostgreSQL's limit and, when it was cut or is taken, ends it with a
// hash of the original, so that two long names sharing a prefix stay apart.
func uniqueName(name, original string, taken map[string]bool) string {
	if len(name) <= maxIdentifier && !taken[name] {
		return name
	}
	sum := sha256.Sum256([]byte(original))
	suffix := "_" + hex.EncodeToString(sum[:4])
	cut := min(len(name), maxIdentifier-len(suffix))
	for cut > 0 && cut < len(name) && !utf8Start(name[cut]) {
		cut-- // never split a multi-byte character
	}
	return name[:cut] + suffix
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// quoteLiteral quotes s as an SQL string literal; RefreshEventViews turns
// standard_conforming_strings on for its transaction, so a backslash is an ordinary character
// (text never holds NUL here: validation refuses it).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
