package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"
)

// Options say where an event came from, which changes a few rules. The zero value with Now set
// decodes an event relayed by Segment's Webhooks destination.
type Options struct {
	// Now is the server's clock: receivedAt when the event has none.
	Now time.Time
	// Collect applies the rules of Segment's HTTP Tracking API, for events sent by an SDK
	// rather than relayed by Segment: receivedAt is always Now, a client's `timestamp` is its
	// `originalTimestamp` (then corrected for clock skew), and `writeKey` is not stored.
	Collect bool
	// Type is the type the endpoint implies (/v1/track). An event without `type` takes it; an
	// event with another type is invalid. Zero accepts any type.
	Type Type
	// Batch holds the fields of a /v1/batch envelope that apply to each of its events.
	Batch *Envelope
}

// Envelope is what a batch request says about all of its events. Context and Integrations are
// merged under each event's own (the event's keys win); SentAt is used when an event has none.
type Envelope struct {
	Context      json.RawMessage
	Integrations json.RawMessage
	SentAt       json.RawMessage
}

// Decode validates one raw JSON event relayed by Segment's Webhooks destination; see DecodeWith.
func Decode(raw []byte, now time.Time) (Event, error) {
	return DecodeWith(raw, Options{Now: now})
}

// DecodeWith validates one raw JSON event and returns it normalised:
//   - a missing messageId is derived from the event's content (see DerivedMessageIDPrefix), so a
//     retried copy of the same event still deduplicates;
//   - a missing receivedAt is opts.Now, the server's clock;
//   - a missing timestamp follows Segment's rule: receivedAt - (sentAt - originalTimestamp) when
//     both exist, else originalTimestamp, else receivedAt.
//
// An invalid event gives a *FieldError naming the first offending field, in a fixed order.
// Text that PostgreSQL cannot store (\u0000, lone UTF-16 surrogates, invalid UTF-8) is invalid.
func DecodeWith(raw []byte, opts Options) (Event, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return Event{}, &FieldError{Reason: "event must be a JSON object"}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Event{}, &FieldError{Reason: "invalid JSON: " + err.Error()}
	}
	if err := applyOptions(fields, opts); err != nil {
		return Event{}, err
	}
	d := decoder{fields: fields}
	e := Event{Size: len(raw)}

	typeName := d.str("type")
	if d.err == nil {
		e.Type = typeByName(typeName)
		if typeName == "" {
			d.fail("type", "is required")
		} else if e.Type == 0 {
			d.fail("type", "must be one of identify, track, page, screen, group, alias")
		}
	}
	if d.err != nil {
		return Event{}, d.err
	}

	if id := fields["messageId"]; id == nil || string(id) == "null" || string(id) == `""` {
		// Derive it now, before the decoder takes the fields apart.
		e.MessageID = deriveMessageID(e.Type, fields)
	}
	if id := d.str("messageId"); id != "" {
		e.MessageID = id
	}
	e.UserID = d.str("userId")
	e.AnonymousID = d.str("anonymousId")
	e.Timestamp = d.time("timestamp")
	e.OriginalTimestamp = d.time("originalTimestamp")
	e.SentAt = d.time("sentAt")
	e.ReceivedAt = d.time("receivedAt")
	e.Context = d.object("context")
	e.Integrations = d.object("integrations")

	switch e.Type {
	case Track:
		e.Event = d.required("event")
		e.Properties = d.object("properties")
	case Identify:
		e.Traits = d.object("traits")
	case Page, Screen:
		e.Name = d.str("name")
		e.Category = d.str("category")
		e.Properties = d.object("properties")
	case Group:
		e.GroupID = d.required("groupId")
		e.Traits = d.object("traits")
	case Alias:
		e.PreviousID = d.required("previousId")
		if d.err == nil && e.UserID == "" {
			d.fail("userId", "is required")
		}
	}
	if d.err == nil && e.UserID == "" && e.AnonymousID == "" {
		d.fail("userId", "userId or anonymousId is required")
	}
	e.Extra = d.extra()
	if d.err != nil {
		return Event{}, d.err
	}
	applyTimestampRule(&e, opts.Now)
	return e, nil
}

// applyOptions rewrites the top-level fields as the options say, before validation.
func applyOptions(fields map[string]json.RawMessage, opts Options) error {
	if opts.Type != 0 {
		name := []byte(`"` + opts.Type.String() + `"`)
		if raw, ok := fields["type"]; !ok || string(raw) == "null" {
			fields["type"] = name
		} else if !bytes.Equal(raw, name) {
			return &FieldError{Field: "type", Reason: "must be " + opts.Type.String() + " at this endpoint"}
		}
	}
	if opts.Collect {
		delete(fields, "writeKey")
		delete(fields, "receivedAt") // the sink's clock, not the client's
		if _, ok := fields["originalTimestamp"]; !ok {
			if ts, ok := fields["timestamp"]; ok {
				fields["originalTimestamp"] = ts
				delete(fields, "timestamp")
			}
		}
	}
	if b := opts.Batch; b != nil {
		for _, f := range [...]struct {
			name string
			base json.RawMessage
		}{{"context", b.Context}, {"integrations", b.Integrations}} {
			if merged, err := mergeUnder(f.base, fields[f.name]); err != nil {
				return &FieldError{Field: f.name, Reason: "must be a JSON object"}
			} else if merged != nil {
				fields[f.name] = merged
			}
		}
		if _, ok := fields["sentAt"]; !ok && b.SentAt != nil {
			fields["sentAt"] = b.SentAt
		}
	}
	return nil
}

// mergeUnder returns the object over with base's keys added where over lacks them, or nil when
// there is nothing to change. Both must be objects (or absent).
func mergeUnder(base, over json.RawMessage) (json.RawMessage, error) {
	if base == nil {
		return nil, nil
	}
	if over == nil || string(over) == "null" {
		return base, nil
	}
	var b, o map[string]json.RawMessage
	if err := json.Unmarshal(over, &o); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(base, &b); err != nil {
		return nil, err
	}
	for k, v := range b {
		if _, ok := o[k]; !ok {
			o[k] = v
		}
	}
	return json.Marshal(o)
}

func typeByName(name string) Type {
	for _, t := range Types {
		if typeNames[t] == name {
			return t
		}
	}
	return 0
}

// applyTimestampRule fills receivedAt and timestamp the way Segment does.
func applyTimestampRule(e *Event, now time.Time) {
	if e.ReceivedAt.IsZero() {
		e.ReceivedAt = now
	}
	if !e.Timestamp.IsZero() {
		return
	}
	switch {
	case !e.SentAt.IsZero() && !e.OriginalTimestamp.IsZero():
		// Correct the client's clock skew: the client says it sent the event sentAt after it
		// happened, and we received it at receivedAt.
		e.Timestamp = e.ReceivedAt.Add(-e.SentAt.Sub(e.OriginalTimestamp))
	case !e.OriginalTimestamp.IsZero():
		e.Timestamp = e.OriginalTimestamp
	default:
		e.Timestamp = e.ReceivedAt
	}
}

// DerivedMessageIDPrefix starts every messageId that the sink derived because the event had none.
const DerivedMessageIDPrefix = "sink-"

// deriveMessageID hashes everything the sender controls except the fields that change between
// retries of the same event (sentAt, and receivedAt when a relay sets it).
func deriveMessageID(t Type, fields map[string]json.RawMessage) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		switch k {
		case "messageId", "sentAt", "receivedAt":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := sha256.New()
	h.Write([]byte(t.String()))
	var n [8]byte
	for _, k := range keys {
		binary.BigEndian.PutUint64(n[:], uint64(len(k)))
		h.Write(n[:])
		h.Write([]byte(k))
		v := fields[k]
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write(v)
	}
	return DerivedMessageIDPrefix + hex.EncodeToString(h.Sum(nil)[:16])
}

// decoder takes the known fields out of an event's top-level object one by one, keeping the
// first error. What is left at the end becomes the event's extra object.
type decoder struct {
	fields map[string]json.RawMessage
	err    *FieldError
}

func (d *decoder) fail(field, reason string) {
	if d.err == nil {
		d.err = &FieldError{Field: field, Reason: reason}
	}
}

// take removes a field and returns its raw value, or nil when it is absent or null.
func (d *decoder) take(field string) json.RawMessage {
	raw, ok := d.fields[field]
	if !ok {
		return nil
	}
	delete(d.fields, field)
	if d.err != nil || string(raw) == "null" {
		return nil
	}
	if reason := textProblem(raw); reason != "" {
		d.fail(field, reason)
		return nil
	}
	return raw
}

func (d *decoder) str(field string) string {
	raw := d.take(field)
	if raw == nil {
		return ""
	}
	if raw[0] != '"' {
		d.fail(field, "must be a string")
		return ""
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		d.fail(field, "must be a string")
	}
	return s
}

func (d *decoder) required(field string) string {
	s := d.str(field)
	if s == "" {
		d.fail(field, "is required")
	}
	return s
}

func (d *decoder) object(field string) json.RawMessage {
	raw := d.take(field)
	if raw != nil && raw[0] != '{' {
		d.fail(field, "must be a JSON object")
		return nil
	}
	return raw
}

func (d *decoder) time(field string) time.Time {
	s := d.str(field)
	if s == "" {
		return time.Time{}
	}
	t, ok := ParseTime(s)
	if !ok {
		d.fail(field, "must be an ISO 8601 date-time with a time zone, such as 2024-05-01T12:00:00.000Z")
	}
	return t
}

// extra returns the fields nobody took as one JSON object with sorted keys, or nil.
func (d *decoder) extra() json.RawMessage {
	if d.err != nil || len(d.fields) == 0 {
		return nil
	}
	keys := make([]string, 0, len(d.fields))
	size := 2
	for k, v := range d.fields {
		keys = append(keys, k)
		size += len(k) + len(v) + 4
	}
	slices.Sort(keys)
	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, k := range keys {
		v := d.fields[k]
		if reason := textProblem(v); reason != "" {
			d.fail(k, reason)
			return nil
		}
		if i > 0 {
			out = append(out, ',')
		}
		key, err := json.Marshal(k)
		if err != nil || bytes.Contains(key, []byte(`\u0000`)) {
			d.fail(k, "field name contains \\u0000, which PostgreSQL cannot store")
			return nil
		}
		out = append(out, key...)
		out = append(out, ':')
		out = append(out, v...)
	}
	return append(out, '}')
}

// ParseTime parses an ISO 8601 date-time with a time zone: RFC 3339 with any fraction of a second
// and a Z or ±hh:mm offset, or the ±hhmm offset some clients send.
func ParseTime(s string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999-0700", s); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// textProblem says why PostgreSQL could not store a raw JSON value, or returns "". PostgreSQL's
// text and jsonb reject the NUL character, lone UTF-16 surrogates and invalid UTF-8. The value
// is valid JSON, so every backslash starts an escape sequence inside a string: stepping over
// whole escapes keeps an escaped backslash followed by "u0000" (`\\u0000`) from looking like NUL.
func textProblem(raw []byte) string {
	if !utf8.Valid(raw) {
		return "contains invalid UTF-8"
	}
	for i := bytes.IndexByte(raw, '\\'); i >= 0; {
		step := 2
		if raw[i+1] == 'u' {
			step = 6
			r := hex4(raw[i+2 : i+6])
			switch {
			case r == 0:
				return `contains \u0000, which PostgreSQL cannot store`
			case r >= 0xD800 && r < 0xDC00:
				if i+12 > len(raw) || raw[i+6] != '\\' || raw[i+7] != 'u' {
					return "contains a lone UTF-16 surrogate, which PostgreSQL cannot store"
				}
				if low := hex4(raw[i+8 : i+12]); low < 0xDC00 || low >= 0xE000 {
					return "contains a lone UTF-16 surrogate, which PostgreSQL cannot store"
				}
				step = 12
			case r >= 0xDC00 && r < 0xE000:
				return "contains a lone UTF-16 surrogate, which PostgreSQL cannot store"
			}
		}
		next := bytes.IndexByte(raw[i+step:], '\\')
		if next < 0 {
			break
		}
		i += step + next
	}
	return ""
}

// hex4 decodes four hex digits; the JSON decoder has already checked that they are.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}
