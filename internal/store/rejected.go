package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segment-sink/segment-sink/internal/event"
)

// Quarantine keeps refused requests in rejected_events.
func (s *Store) Quarantine(ctx context.Context, rejections []event.Rejection) error {
	batch := &pgx.Batch{}
	for _, r := range rejections {
		var index *int
		if r.Index >= 0 {
			index = &r.Index
		}
		batch.Queue(`INSERT INTO rejected_events (received_at, path, status, reason, error, field, event_index, content_type, body)
			VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, NULLIF($8, ''), $9)`,
			r.ReceivedAt, storable(r.Path), r.Status, r.Reason, storable(r.Error), storable(r.Field), index,
			storable(r.ContentType), r.Body)
	}
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("quarantine %d rejected requests: %w", len(rejections), err)
	}
	return nil
}

// storable makes a message fit a text column: the refused text itself may be what text cannot
// hold (a field named with \u0000). The body, in bytea, keeps the original.
func storable(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", `\u0000`)
}

// PruneRejected deletes quarantined requests received more than retention ago and returns
// how many it deleted.
func (s *Store) PruneRejected(ctx context.Context, retention time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM rejected_events WHERE received_at < now() - $1::interval`, retention.String())
	if err != nil {
		return 0, fmt.Errorf("prune rejected events: %w", err)
	}
	return tag.RowsAffected(), nil
}

// StoredRejection is a quarantined request as read back.
type StoredRejection struct {
	ID         int64
	Rejection  event.Rejection
	ReplayedAt *time.Time
}

// RejectedFilter selects quarantined requests: the given ids, or else the most recent ones.
type RejectedFilter struct {
	IDs             []int64
	IncludeReplayed bool
	Limit           int
}

// Rejected lists quarantined requests, newest first.
func (s *Store) Rejected(ctx context.Context, f RejectedFilter) ([]StoredRejection, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, received_at, path, status, reason, error, coalesce(field, ''),
			coalesce(event_index, -1), coalesce(content_type, ''), body, replayed_at
		FROM rejected_events
		WHERE (coalesce(cardinality($1::bigint[]), 0) = 0 OR id = ANY($1)) AND ($2 OR replayed_at IS NULL)
		ORDER BY id DESC LIMIT $3`, f.IDs, f.IncludeReplayed || len(f.IDs) > 0, max(f.Limit, 1))
	if err != nil {
		return nil, fmt.Errorf("list rejected events: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (StoredRejection, error) {
		var r StoredRejection
		err := row.Scan(&r.ID, &r.Rejection.ReceivedAt, &r.Rejection.Path, &r.Rejection.Status, &r.Rejection.Reason,
			&r.Rejection.Error, &r.Rejection.Field, &r.Rejection.Index, &r.Rejection.ContentType, &r.Rejection.Body, &r.ReplayedAt)
		return r, err
	})
}

// MarkReplayed records that a quarantined request was accepted on replay.
func (s *Store) MarkReplayed(ctx context.Context, id int64) error {
	if _, err := s.pool.Exec(ctx, `UPDATE rejected_events SET replayed_at = now() WHERE id = $1`, id); err != nil {
		return fmt.Errorf("mark rejected event %d replayed: %w", id, err)
	}
	return nil
}
