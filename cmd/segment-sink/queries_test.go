package main

import (
	"context"
	"database/sql/driver"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// seedShop sends, through the HTTP API, two days of a small shop: an anonymous visitor who signs
// up as user-1 and is later aliased to ada, and two other users. It returns the two days.
func seedShop(t *testing.T, s *sink) (d2, d1 time.Time) {
	t.Helper()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	d2, d1 = today.Add(-48*time.Hour+10*time.Hour), today.Add(-24*time.Hour+10*time.Hour)
	at := func(d time.Time, minutes int) string {
		return d.Add(time.Duration(minutes) * time.Minute).Format(time.RFC3339Nano)
	}
	events := []string{
		fmt.Sprintf(`{"type":"page","anonymousId":"anon-1","name":"Pricing","properties":{"path":"/pricing"},"timestamp":%q}`, at(d2, 0)),
		fmt.Sprintf(`{"type":"track","anonymousId":"anon-1","event":"Product Viewed","timestamp":%q}`, at(d2, 1)),
		fmt.Sprintf(`{"type":"identify","anonymousId":"anon-1","userId":"user-1","traits":{"name":"Ada","plan":"free"},"timestamp":%q}`, at(d2, 5)),
		fmt.Sprintf(`{"type":"track","userId":"user-1","event":"Product Added","timestamp":%q}`, at(d1, 0)),
		fmt.Sprintf(`{"type":"track","userId":"user-1","event":"Order Completed","properties":{"revenue":30,"currency":"EUR","coupon":true},"timestamp":%q}`, at(d1, 1)),
		fmt.Sprintf(`{"type":"alias","previousId":"user-1","userId":"ada","timestamp":%q}`, at(d1, 120)),
		fmt.Sprintf(`{"type":"track","userId":"user-2","event":"Product Viewed","timestamp":%q}`, at(d1, 0)),
		fmt.Sprintf(`{"type":"track","userId":"user-2","event":"Product Added","timestamp":%q}`, at(d1, 2)),
		fmt.Sprintf(`{"type":"page","userId":"user-2","name":"Pricing","context":{"page":{"path":"/pricing"}},"timestamp":%q}`, at(d1, 3)),
		fmt.Sprintf(`{"type":"track","userId":"user-3","event":"Product Viewed","timestamp":%q}`, at(d1, 0)),
		fmt.Sprintf(`{"type":"track","userId":"user-3","event":"Order Completed","properties":{"revenue":"n/a"},"timestamp":%q}`, at(d1, 5)),
		fmt.Sprintf(`{"type":"page","userId":"user-3","name":"Docs","properties":{"path":"/docs"},"timestamp":%q}`, at(d1, 6)),
		fmt.Sprintf(`{"type":"group","userId":"user-1","groupId":"acme","traits":{"name":"Acme","plan":"pro"},"timestamp":%q}`, at(d1, 0)),
		fmt.Sprintf(`{"type":"group","userId":"user-2","groupId":"acme","timestamp":%q}`, at(d1, 1)),
		fmt.Sprintf(`{"type":"group","userId":"user-3","groupId":"beta","traits":{"name":"Beta"},"timestamp":%q}`, at(d1, 2)),
	}
	for _, e := range events {
		if status, body := s.post(t, "/webhook", "", e); status != http.StatusOK {
			t.Fatalf("seed %s = %d %v", e, status, body)
		}
	}
	return d2, d1
}

// rows runs a query and returns its rows as text, one line per row, columns separated by |.
func rows(t *testing.T, conn *pgx.Conn, query string) []string {
	t.Helper()
	rs, err := conn.Query(context.Background(), query)
	if err != nil {
		t.Fatalf("%v\n%s", err, query)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		values, err := rs.Values()
		if err != nil {
			t.Fatal(err)
		}
		cols := make([]string, len(values))
		for i, v := range values {
			switch x := v.(type) {
			case time.Time:
				cols[i] = x.UTC().Format("2006-01-02")
			case driver.Valuer: // numeric
				v, _ := x.Value()
				cols[i] = fmt.Sprint(v)
			default:
				cols[i] = fmt.Sprint(x)
			}
		}
		out = append(out, strings.Join(cols, "|"))
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestExampleQueriesOnSeededData(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	conn := s.db(t)
	d2, d1 := seedShop(t, s)
	day2, day1 := d2.Format("2006-01-02"), d1.Format("2006-01-02")

	want := map[string][]string{
		"daily_active_users.sql": {day2 + "|1", day1 + "|3"},
		"top_events.sql":         {"Product Viewed|3|3", "Order Completed|2|2", "Product Added|2|2"},
		"funnel.sql":             {"3|2|1"},
		"page_views_by_path.sql": {"/pricing|2|2", "/docs|1|1"},
		"revenue_by_day.sql":     {day1 + "|2|30"},
		"users_per_account.sql":  {"acme|Acme|pro|2|" + day1, "beta|Beta|<nil>|1|" + day1},
		"identity_stitching.sql": {"ada|[anon-1 user-1]|5", "user-2|[user-2]|3", "user-3|[user-3]|3"},
	}
	files, err := filepath.Glob("../../sql/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no queries in sql/: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		query, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		got := rows(t, conn, string(query))
		if name == "weekly_active_users.sql" {
			// The two days may fall in one week or two; either way the last week has everyone.
			if len(got) == 0 || len(got) > 2 || !strings.HasSuffix(got[len(got)-1], "|3") || (len(got) == 2 && !strings.HasSuffix(got[0], "|1")) {
				t.Errorf("%s = %q", name, got)
			}
			continue
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("%s has no expected result: every query in sql/ must be checked", name)
			continue
		}
		if strings.Join(got, "\n") != strings.Join(w, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", name, got, w)
		}
	}

	// The identity map behind them: the anonymous id and the aliased id both lead to ada.
	if got := rows(t, conn, `SELECT id, user_id FROM identities ORDER BY id`); strings.Join(got, ",") != "anon-1|ada,user-1|ada" {
		t.Errorf("identities = %q", got)
	}
	// users and accounts, kept by the flushes.
	if got := rows(t, conn, `SELECT user_id, traits->>'name', first_seen_at, last_seen_at FROM users WHERE user_id = 'user-1'`); len(got) != 1 || got[0] != "user-1|Ada|"+day2+"|"+day2 {
		t.Errorf("users row of user-1 = %q", got)
	}
	// The flattened context columns.
	if got := rows(t, conn, `SELECT context_page_path FROM pages WHERE user_id = 'user-2'`); len(got) != 1 || got[0] != "/pricing" {
		t.Errorf("context_page_path = %q", got)
	}
}

// TestQueriesCanUseTheirIndexes shows, with EXPLAIN, that each example query has an index to
// read through (the planner prefers a sequential scan on a few rows, so it is told not to).
func TestQueriesCanUseTheirIndexes(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	conn := s.db(t)
	seedShop(t, s)
	if _, err := conn.Exec(context.Background(), `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	for file, index := range map[string]string{
		"top_events.sql":         "tracks_event_timestamp_idx",
		"revenue_by_day.sql":     "tracks_event_timestamp_idx",
		"funnel.sql":             "tracks_event_timestamp_idx",
		"page_views_by_path.sql": "pages_timestamp_idx",
		"users_per_account.sql":  "groups_group_id_idx",
		"daily_active_users.sql": "identifies_anonymous_id_idx",
	} {
		query, err := os.ReadFile("../../sql/" + file)
		if err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(rows(t, conn, "EXPLAIN "+string(query)), "\n")
		if !strings.Contains(plan, index) {
			t.Errorf("%s does not use %s:\n%s", file, index, plan)
		}
	}
}
