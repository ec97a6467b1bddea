package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestEventViews(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	conn := s.db(t)
	long := strings.Repeat("Very Long Event Name ", 4)
	events := []string{
		`{"type":"track","userId":"u1","event":"Order Completed","properties":{"revenue":20,"currency":"EUR","coupon":true,"products":[{"sku":"a"}],"value":1,"Order ID":"o-1"}}`,
		`{"type":"track","userId":"u2","event":"Order Completed","properties":{"revenue":10.5,"currency":"USD","coupon":false,"value":"high"}}`,
		`{"type":"track","userId":"u3","event":"Signed Up!!","properties":{"plan":"pro"}}`,
		`{"type":"track","userId":"u4","event":"` + long + `A"}`,
		`{"type":"track","userId":"u5","event":"` + long + `B"}`,
		`{"type":"track","userId":"u6","event":"users","properties":{"id":"clash","user_id":"clash too"}}`,
		`{"type":"track","userId":"u7","event":"2024 Recap"}`,
	}
	for _, e := range events {
		if status, body := s.post(t, "/webhook", "", e); status != http.StatusOK {
			t.Fatalf("%s = %d %v", e, status, body)
		}
	}
	env := map[string]string{"DATABASE_URL": s.dbURL}
	var out lockedBuffer
	if err := run(context.Background(), []string{"views", "refresh"}, func(k string) string { return env[k] }, &out, &out); err != nil {
		t.Fatalf("views refresh: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "6 event views") {
		t.Errorf("output:\n%s", out.String())
	}

	columnType := func(view, column string) string {
		var typ string
		conn.QueryRow(context.Background(), `SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = $2`, view, column).Scan(&typ)
		return typ
	}
	types := []struct{ view, column, want string }{
		{"order_completed", "revenue", "numeric"},
		{"order_completed", "currency", "text"},
		{"order_completed", "coupon", "boolean"},
		{"order_completed", "products", "jsonb"},
		{"order_completed", "value", "text"}, // a number once, a string once
		{"order_completed", "order_id", "text"},
		{"order_completed", "event_text", "text"},
		{"order_completed", "context_ip", "text"},
		{"signed_up", "plan", "text"},
		{"e_2024_recap", "event", "text"},
	}
	for _, c := range types {
		if got := columnType(c.view, c.column); got != c.want {
			t.Errorf("%s.%s is %q, want %q", c.view, c.column, got, c.want)
		}
	}
	if got := queryInt(t, conn, `SELECT (sum(revenue) * 10)::int FROM order_completed WHERE event = 'order_completed' AND event_text = 'Order Completed'`); got != 305 {
		t.Errorf("10 x sum(revenue) = %d, want 305", got)
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM order_completed WHERE coupon`); got != 1 {
		t.Errorf("coupon true = %d", got)
	}
	// Long names share 63 bytes of prefix: both views exist, under distinct names within the limit.
	names := rows(t, conn, `SELECT view_name FROM event_views WHERE event LIKE 'Very Long%' ORDER BY event`)
	if len(names) != 2 || names[0] == names[1] || len(names[0]) > 63 || len(names[1]) > 63 {
		t.Errorf("long event names became %q", names)
	}
	for _, n := range names {
		if got := queryInt(t, conn, fmt.Sprintf(`SELECT count(*) FROM %q`, n)); got != 1 {
			t.Errorf("view %s has %d rows, want 1", n, got)
		}
	}
	// An event named like a table gets a view of another name; its clashing properties too.
	var usersView string
	conn.QueryRow(context.Background(), `SELECT view_name FROM event_views WHERE event = 'users'`).Scan(&usersView)
	if usersView == "users" || !strings.HasPrefix(usersView, "users_") {
		t.Errorf("the event users became view %q", usersView)
	}
	if got := columnType(usersView, "property_id"); got != "text" {
		t.Errorf("a property named id should become property_id, got %q", got)
	}
	if got := columnType(usersView, "property_user_id"); got != "text" {
		t.Errorf("a property named user_id should become property_user_id, got %q", got)
	}

	// A new property, then a refresh: the view gains a column and keeps its name.
	s.post(t, "/webhook", "", `{"type":"track","userId":"u8","event":"Signed Up!!","properties":{"referrer":"ad"}}`)
	if err := run(context.Background(), []string{"views", "refresh"}, func(k string) string { return env[k] }, &out, &out); err != nil {
		t.Fatal(err)
	}
	if got := columnType("signed_up", "referrer"); got != "text" {
		t.Errorf("after a refresh, signed_up.referrer is %q", got)
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM event_views`); got != 6 {
		t.Errorf("event_views = %d rows, want 6", got)
	}
}
