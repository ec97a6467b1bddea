package store

import "context"

// Exec runs sql on one of the store's own connections, for tests that act on a connection's
// session (DEALLOCATE ALL, say).
func (s *Store) Exec(ctx context.Context, sql string) error {
	_, err := s.pool.Exec(ctx, sql)
	return err
}
