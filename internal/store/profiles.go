package store

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segment-sink/segment-sink/internal/event"
)

// profileUpsert keeps users and accounts current from a flush, in the flush's transaction:
// traits merge per key, the most recently set value winning (segment_sink_merge_traits), and the
// first and last seen times widen. Rows are upserted in id order so that concurrent flushes
// cannot deadlock; one is rewritten only when something in it changes.
const profileUpsert = `INSERT INTO %[1]s AS p (%[2]s, traits, trait_timestamps, first_seen_at, last_seen_at)
SELECT * FROM unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[]) ORDER BY 1
ON CONFLICT (%[2]s) DO UPDATE SET
    (traits, trait_timestamps) = (SELECT m.traits, m.times FROM segment_sink_merge_traits(p.traits, p.trait_timestamps, excluded.traits, excluded.trait_timestamps) m),
    first_seen_at = least(p.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest(p.last_seen_at, excluded.last_seen_at),
    updated_at = now()
WHERE NOT (p.traits @> excluded.traits AND p.trait_timestamps @> excluded.trait_timestamps)
   OR excluded.first_seen_at < p.first_seen_at OR excluded.last_seen_at > p.last_seen_at`

var (
	usersUpsert    = fmtProfile("users", "user_id")
	accountsUpsert = fmtProfile("accounts", "group_id")
)

func fmtProfile(table, key string) *statement {
	return &statement{name: "segment_sink_" + table, what: "update " + table,
		sql: strings.NewReplacer("%[1]s", table, "%[2]s", key).Replace(profileUpsert)}
}

// profile is what one flush says about one user or account.
type profile struct {
	traits      map[string]json.RawMessage
	times       map[string]int64 // trait -> Unix microseconds it was set at
	first, last time.Time
}

// see records an event at t, and the traits it sets.
func (p *profile) see(t time.Time, traits json.RawMessage) {
	if p.first.IsZero() || t.Before(p.first) {
		p.first = t
	}
	if t.After(p.last) {
		p.last = t
	}
	if traits == nil {
		return
	}
	var set map[string]json.RawMessage
	if json.Unmarshal(traits, &set) != nil {
		return // validated as an object already
	}
	at := t.UnixMicro()
	for k, v := range set {
		if prev, ok := p.times[k]; ok && prev > at {
			continue // a newer value from this same flush stays
		}
		if p.traits == nil {
			p.traits, p.times = map[string]json.RawMessage{}, map[string]int64{}
		}
		p.traits[k], p.times[k] = v, at
	}
}

// profiles gathers, per user_id, the flush's identify calls, and per group_id its group calls:
// the calls that carry traits. Following every event would rewrite a user's row for each event
// (its last_seen_at moves every time): measured with sinkbench, that cost 12-35% of the
// throughput, so first_seen_at and last_seen_at span the identify (group) calls.
func profiles(rows []*event.Event) (users, accounts map[string]*profile) {
	users, accounts = map[string]*profile{}, map[string]*profile{}
	get := func(m map[string]*profile, id string) *profile {
		p, ok := m[id]
		if !ok {
			p = &profile{}
			m[id] = p
		}
		return p
	}
	for _, e := range rows {
		switch {
		case e.Type == event.Identify && e.UserID != "":
			get(users, e.UserID).see(e.Timestamp, e.Traits)
		case e.Type == event.Group:
			get(accounts, e.GroupID).see(e.Timestamp, e.Traits)
		}
	}
	return users, accounts
}

// profileArrays encodes profiles as the upsert's array parameters, ordered by id so that
// concurrent flushes lock rows in the same order.
func (p *params) profileArrays(m map[string]*profile) {
	ids := slices.Sorted(maps.Keys(m))
	p.array(textOID, len(ids))
	for _, id := range ids {
		p.text(id)
	}
	p.end()
	p.array(jsonbOID, len(ids))
	for _, id := range ids {
		p.json(objectOf(m[id].traits))
	}
	p.end()
	p.array(jsonbOID, len(ids))
	for _, id := range ids {
		p.json(timesOf(m[id].times))
	}
	p.end()
	p.array(timestamptzOID, len(ids))
	for _, id := range ids {
		p.time(m[id].first)
	}
	p.end()
	p.array(timestamptzOID, len(ids))
	for _, id := range ids {
		p.time(m[id].last)
	}
	p.end()
}

func objectOf(m map[string]json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return json.RawMessage(`{}`)
	}
	b, _ := json.Marshal(m)
	return b
}

func timesOf(m map[string]int64) json.RawMessage {
	if len(m) == 0 {
		return json.RawMessage(`{}`)
	}
	b := []byte{'{'}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if len(b) > 1 {
			b = append(b, ',')
		}
		key, _ := json.Marshal(k)
		b = append(b, key...)
		b = append(b, ':')
		b = strconv.AppendInt(b, m[k], 10)
	}
	return append(b, '}')
}

// queueProfiles queues the users and accounts upserts for rows, if they have any.
func (f *flush) queueProfiles(rows []*event.Event) {
	users, accounts := profiles(rows)
	if len(users) > 0 {
		f.profileArrays(users)
		f.queue(usersUpsert)
	}
	if len(accounts) > 0 {
		f.profileArrays(accounts)
		f.queue(accountsUpsert)
	}
}
