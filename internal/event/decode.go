package event

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
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
	// ClientIP, if set, becomes context.ip when the event has none, as Segment's API does.
	ClientIP string
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

// The top-level fields the decoder knows, by index.
const (
	fType = iota
	fMessageID
	fUserID
	fAnonymousID
	fTimestamp
	fOriginalTimestamp
	fSentAt
	fReceivedAt
	fContext
	fIntegrations
	fEvent
	fProperties
	fTraits
	fName
	fCategory
	fGroupID
	fPreviousID
	numFields
)

var fieldNames = [numFields]string{
	fType: "type", fMessageID: "messageId", fUserID: "userId", fAnonymousID: "anonymousId",
	fTimestamp: "timestamp", fOriginalTimestamp: "originalTimestamp", fSentAt: "sentAt",
	fReceivedAt: "receivedAt", fContext: "context", fIntegrations: "integrations", fEvent: "event",
	fProperties: "properties", fTraits: "traits", fName: "name", fCategory: "category",
	fGroupID: "groupId", fPreviousID: "previousId",
}

// typeFields are the fields with a column only in some tables; elsewhere they go to extra.
var typeFields = [...]struct {
	field int
	types []Type
}{
	{fEvent, []Type{Track}},
	{fProperties, []Type{Track, Page, Screen}},
	{fTraits, []Type{Identify, Group}},
	{fName, []Type{Page, Screen}},
	{fCategory, []Type{Page, Screen}},
	{fGroupID, []Type{Group}},
	{fPreviousID, []Type{Alias}},
}

// fieldIndex returns the index of the field named by the unescaped key, or -1.
func fieldIndex(name []byte) int {
	switch string(name) { // compared without a conversion
	case "type":
		return fType
	case "messageId":
		return fMessageID
	case "userId":
		return fUserID
	case "anonymousId":
		return fAnonymousID
	case "timestamp":
		return fTimestamp
	case "originalTimestamp":
		return fOriginalTimestamp
	case "sentAt":
		return fSentAt
	case "receivedAt":
		return fReceivedAt
	case "context":
		return fContext
	case "integrations":
		return fIntegrations
	case "event":
		return fEvent
	case "properties":
		return fProperties
	case "traits":
		return fTraits
	case "name":
		return fName
	case "category":
		return fCategory
	case "groupId":
		return fGroupID
	case "previousId":
		return fPreviousID
	}
	return -1
}

// member is one top-level field: its raw key (quotes and escapes included) and raw value.
type member struct {
	key, value []byte
}

// name returns the member's decoded key.
func (m member) name() string { return memberName(m.key) }

// memberName decodes a raw key, quotes included, that the scanner checked.
func memberName(key []byte) string {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key[1 : len(key)-1])
	}
	var s string
	_ = json.Unmarshal(key, &s)
	return s
}

// fields are an event's top-level fields as raw JSON, split once by the scanner. Values point
// into the request body: nothing is copied.
type fields struct {
	known [numFields]member // value nil: absent
	other []member          // every other field, in order; duplicates included (the last wins in jsonb)
}

func (f *fields) has(i int) bool { return f.known[i].value != nil }

// present reports whether field i has a value other than null.
func (f *fields) present(i int) bool {
	v := f.known[i].value
	return v != nil && string(v) != "null"
}

func (f *fields) set(i int, value []byte) {
	f.known[i] = member{key: []byte(`"` + fieldNames[i] + `"`), value: value}
}

// split scans raw, which must be one JSON object, into fields. A syntax error gives a
// FieldError without a field; text PostgreSQL cannot store gives one naming the top-level field
// that holds it.
func split(raw []byte) (*fields, error) {
	s := scanner{data: raw}
	s.skipSpace()
	if s.pos >= len(raw) || raw[s.pos] != '{' {
		return nil, &FieldError{Reason: "event must be a JSON object"}
	}
	f := &fields{}
	var textField string
	textFound := false
	err := s.object(1, func(key []byte, escaped bool, value []byte) {
		m := member{key: key, value: value}
		name := key[1 : len(key)-1]
		if escaped {
			name = []byte(m.name())
		}
		if s.text != "" && !textFound {
			textField, textFound = m.name(), true // the first field whose key or value holds it
		}
		if i := fieldIndex(name); i >= 0 {
			f.known[i] = m
		} else {
			f.other = append(f.other, m)
		}
	})
	if err == nil {
		s.skipSpace()
		if s.pos < len(raw) {
			err = s.fail("unexpected data after the event")
		}
	}
	if err != nil {
		fe := &FieldError{Reason: "invalid JSON: " + err.Error()}
		if s.key != nil {
			fe.Field = member{key: s.key}.name() // the top-level field it happened in
		}
		return nil, fe
	}
	if textFound {
		return nil, &FieldError{Field: textField, Reason: s.text}
	}
	return f, nil
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
// The event's raw values point into raw, which must not change afterwards.
func DecodeWith(raw []byte, opts Options) (Event, error) {
	f, err := split(raw)
	if err != nil {
		return Event{}, err
	}
	if err := applyOptions(f, opts); err != nil {
		return Event{}, err
	}
	d := decoder{f: f}
	e := Event{Size: len(raw) + eventSize}

	typeName := d.str(fType)
	if d.err == nil {
		e.Type = typeByName(typeName)
		if typeName == "" {
			d.fail(fType, "is required")
		} else if e.Type == 0 {
			d.fail(fType, "must be one of identify, track, page, screen, group, alias")
		}
	}
	if d.err != nil {
		return Event{}, d.err
	}
	// Fields without a column in this type's table are kept in extra.
	for _, tf := range typeFields {
		if f.has(tf.field) && !slices.Contains(tf.types, e.Type) {
			f.other = append(f.other, f.known[tf.field])
			f.known[tf.field] = member{}
		}
	}

	e.MessageID = d.id(fMessageID, MaxMessageIDLength)
	e.UserID = d.id(fUserID, MaxIDBytes)
	e.AnonymousID = d.id(fAnonymousID, MaxIDBytes)
	e.Timestamp = d.time(fTimestamp)
	e.OriginalTimestamp = d.time(fOriginalTimestamp)
	e.SentAt = d.time(fSentAt)
	e.ReceivedAt = d.time(fReceivedAt)
	e.Context = d.object(fContext)
	e.Integrations = d.object(fIntegrations)
	switch e.Type {
	case Track:
		e.Event = d.required(fEvent)
		d.maxBytes(fEvent, e.Event, MaxIDBytes)
		e.Properties = d.object(fProperties)
	case Identify:
		e.Traits = d.object(fTraits)
	case Page, Screen:
		e.Name = d.str(fName)
		e.Category = d.str(fCategory)
		e.Properties = d.object(fProperties)
	case Group:
		e.GroupID = d.required(fGroupID)
		d.maxBytes(fGroupID, e.GroupID, MaxIDBytes)
		e.Traits = d.object(fTraits)
	case Alias:
		e.PreviousID = d.required(fPreviousID)
		d.maxBytes(fPreviousID, e.PreviousID, MaxIDBytes)
		if d.err == nil && e.UserID == "" {
			d.fail(fUserID, "is required")
		}
	}
	if d.err == nil && e.UserID == "" && e.AnonymousID == "" {
		d.fail(fUserID, "userId or anonymousId is required")
	}
	if d.err != nil {
		return Event{}, d.err
	}
	e.Extra = extra(f.other)
	if e.MessageID == "" {
		e.MessageID = deriveMessageID(e.Type, f)
	}
	if opts.ClientIP != "" {
		// After the messageId is derived: a retry from another address is the same event.
		if ctx, ok := withIP(e.Context, opts.ClientIP); ok {
			e.Context = ctx
		}
	}
	applyTimestampRule(&e, opts.Now)
	return e, nil
}

// applyOptions rewrites the top-level fields as the options say, before validation.
func applyOptions(f *fields, opts Options) error {
	if opts.Type != 0 {
		if !f.present(fType) {
			f.set(fType, []byte(`"`+opts.Type.String()+`"`))
		} else if given := (member{key: f.known[fType].value}).name(); given != opts.Type.String() {
			// name() decodes the quoted value, escapes included ("tr\u0061ck" is track).
			return &FieldError{Field: "type", Reason: "must be " + opts.Type.String() + " at this endpoint"}
		}
	}
	if opts.Collect {
		f.other = slices.DeleteFunc(f.other, func(m member) bool {
			return string(m.key) == `"writeKey"` || bytes.IndexByte(m.key, '\\') >= 0 && m.name() == "writeKey"
		})
		f.known[fReceivedAt] = member{} // the sink's clock, not the client's
		if !f.has(fOriginalTimestamp) && f.has(fTimestamp) {
			// Relabelled under the field name the client used, so that an error names it.
			f.known[fOriginalTimestamp] = f.known[fTimestamp]
			f.known[fTimestamp] = member{}
		}
	}
	if b := opts.Batch; b != nil {
		for _, i := range [...]int{fContext, fIntegrations} {
			base := b.Context
			if i == fIntegrations {
				base = b.Integrations
			}
			merged, err := mergeUnder(base, f.known[i].value)
			if err != nil {
				return &FieldError{Field: fieldNames[i], Reason: "must be a JSON object"}
			}
			if merged != nil {
				if reason := checkText(merged); reason != "" {
					return &FieldError{Field: fieldNames[i], Reason: reason}
				}
				f.set(i, merged)
			}
		}
		if !f.has(fSentAt) && b.SentAt != nil {
			f.set(fSentAt, b.SentAt)
		}
	}
	return nil
}

// withIP returns the context object with "ip" added when it has none. The key goes first, so the
// rest of the object is copied as it is.
func withIP(context []byte, ip string) ([]byte, bool) {
	quoted, _ := json.Marshal(ip)
	if context == nil || string(context) == "null" {
		return append(append([]byte(`{"ip":`), quoted...), '}'), true
	}
	if context[0] != '{' {
		return nil, false // not an object: the decoder reports it
	}
	s := scanner{data: context}
	hasIP := false
	if err := s.object(1, func(key []byte, _ bool, _ []byte) { hasIP = hasIP || string(key) == `"ip"` }); err != nil || hasIP {
		return nil, false
	}
	out := append(append([]byte(`{"ip":`), quoted...), ',')
	rest := bytes.TrimSpace(context[1:])
	if rest[0] == '}' {
		out[len(out)-1] = '}'
		return out, true
	}
	return append(out, rest...), true
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

// checkText validates raw JSON and says what in it PostgreSQL cannot store, or returns "".
func checkText(raw []byte) string {
	s := scanner{data: raw}
	if err := s.value(0); err != nil {
		return "invalid JSON: " + err.Error()
	}
	return s.text
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
// retries of the same event (sentAt, and receivedAt when a relay sets it), in key order.
func deriveMessageID(t Type, f *fields) string {
	type kv struct {
		k string
		v []byte
	}
	var all []kv
	for i, m := range f.known {
		if m.value != nil && i != fMessageID && i != fSentAt && i != fReceivedAt {
			all = append(all, kv{fieldNames[i], m.value})
		}
	}
	for _, m := range f.other {
		all = append(all, kv{m.name(), m.value})
	}
	// A stable sort keeps duplicate keys in arrival order, so the hash is the same every time.
	slices.SortStableFunc(all, func(a, b kv) int { return cmp.Compare(a.k, b.k) })
	h := sha256.New()
	h.Write([]byte(t.String()))
	var n [8]byte
	for _, x := range all {
		binary.BigEndian.PutUint64(n[:], uint64(len(x.k)))
		h.Write(n[:])
		h.Write([]byte(x.k))
		binary.BigEndian.PutUint64(n[:], uint64(len(x.v)))
		h.Write(n[:])
		h.Write(x.v)
	}
	return DerivedMessageIDPrefix + hex.EncodeToString(h.Sum(nil)[:16])
}

// extra returns the other fields as one JSON object, keys and values as they were sent, or nil.
func extra(other []member) json.RawMessage {
	if len(other) == 0 {
		return nil
	}
	size := 1
	for _, m := range other {
		size += len(m.key) + len(m.value) + 2
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, m := range other {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, m.key...)
		out = append(out, ':')
		out = append(out, m.value...)
	}
	return append(out, '}')
}

// decoder reads the known fields one by one, keeping the first error.
type decoder struct {
	f   *fields
	err *FieldError
}

func (d *decoder) fail(i int, reason string) {
	if d.err == nil {
		// The key as sent: a client's timestamp is read as originalTimestamp (Collect).
		d.err = &FieldError{Field: fieldNames[i], Reason: reason}
		if d.f.known[i].key != nil {
			d.err.Field = d.f.known[i].name()
		}
	}
}

// raw returns field i's value, or nil when it is absent or null.
func (d *decoder) raw(i int) []byte {
	if d.err != nil || !d.f.present(i) {
		return nil
	}
	return d.f.known[i].value
}

func (d *decoder) str(i int) string {
	raw := d.raw(i)
	if raw == nil {
		return ""
	}
	if raw[0] != '"' {
		d.fail(i, "must be a string")
		return ""
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		d.fail(i, "must be a string")
	}
	return s
}

// Limits on the fields that are indexed: a btree entry over ~2.7 kB fails the insert.
const (
	// MaxMessageIDLength is Segment's own cap on messageId, in characters.
	MaxMessageIDLength = 100
	// MaxIDBytes caps userId, anonymousId, groupId, previousId and a track's event name.
	MaxIDBytes = 1024
)

// id reads an id field, at most max characters long (bytes for MaxIDBytes).
func (d *decoder) id(i int, max int) string {
	s := d.str(i)
	if i == fMessageID {
		if utf8.RuneCountInString(s) > max {
			d.fail(i, "is longer than "+strconv.Itoa(max)+" characters")
		}
		return s
	}
	d.maxBytes(i, s, max)
	return s
}

func (d *decoder) maxBytes(i int, s string, max int) {
	if len(s) > max {
		d.fail(i, "is longer than "+strconv.Itoa(max)+" bytes")
	}
}

func (d *decoder) required(i int) string {
	s := d.str(i)
	if s == "" {
		d.fail(i, "is required")
	}
	return s
}

func (d *decoder) object(i int) json.RawMessage {
	raw := d.raw(i)
	if raw != nil && raw[0] != '{' {
		d.fail(i, "must be a JSON object")
		return nil
	}
	return raw
}

func (d *decoder) time(i int) time.Time {
	s := d.str(i)
	if s == "" {
		return time.Time{}
	}
	t, ok := ParseTime(s)
	if !ok {
		d.fail(i, "must be an ISO 8601 date-time with a time zone, such as 2024-05-01T12:00:00.000Z")
	}
	return t
}

// ParseTime parses an ISO 8601 date-time with a time zone: RFC 3339 with any fraction of a second
// and a Z or ±hh:mm offset, or the ±hhmm offset some clients send. As RFC 3339 allows, the
// separator may be a lowercase t or a space, and the zone a lowercase z.
func ParseTime(s string) (time.Time, bool) {
	if len(s) > 10 && (s[10] == 't' || s[10] == ' ' || s[len(s)-1] == 'z') {
		b := []byte(s)
		if b[10] == 't' || b[10] == ' ' {
			b[10] = 'T'
		}
		if b[len(b)-1] == 'z' {
			b[len(b)-1] = 'Z'
		}
		s = string(b)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999-0700", s); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// TrimSpace removes JSON's whitespace (space, tab, newline, carriage return) around raw, and
// nothing else: bytes.TrimSpace would also take \v, \f and Unicode spaces, which JSON forbids.
func TrimSpace(raw []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(raw) > 0 && isSpace(raw[0]) {
		raw = raw[1:]
	}
	for len(raw) > 0 && isSpace(raw[len(raw)-1]) {
		raw = raw[:len(raw)-1]
	}
	return raw
}

// envelopeDepth is how deeply an envelope (a batch request's body) may nest, events included, as
// encoding/json allows; each event's own nesting is held to MaxDepth when it is decoded.
const envelopeDepth = 10000

// Members checks that raw is one JSON object and calls member with the name and the raw value of
// each of its top-level members, in order; values point into raw, nothing is copied. Only the
// syntax is checked: what the values hold is checked when they are decoded.
func Members(raw []byte, member func(name string, value []byte)) error {
	s := scanner{data: raw}
	s.skipSpace()
	if s.pos >= len(raw) || raw[s.pos] != '{' {
		return &FieldError{Reason: "body must be a JSON object"}
	}
	err := s.object(MaxDepth-envelopeDepth+1, func(key []byte, _ bool, value []byte) {
		member(memberName(key), value)
	})
	if err == nil {
		s.skipSpace()
		if s.pos < len(raw) {
			err = s.fail("unexpected data after the object")
		}
	}
	if err != nil {
		return &FieldError{Reason: "invalid JSON: " + err.Error()}
	}
	return nil
}

// SplitArray returns the raw elements of a JSON array, exactly as they appear in raw (Segment
// signs a batch over the bytes of its first element). Only the array's syntax is checked here;
// each element is validated when it is decoded.
func SplitArray(raw []byte) ([][]byte, error) {
	// Depth 0: the elements sit at depth 1, as a lone event does.
	return splitArray(raw, 0)
}

// SplitBatch is SplitArray for the batch of a tracking API envelope: the elements may nest as
// deeply as an envelope may, so that an event nested too deeply is refused alone when it is
// decoded, not with the whole batch.
func SplitBatch(raw []byte) ([][]byte, error) {
	return splitArray(raw, MaxDepth-envelopeDepth+1)
}

func splitArray(raw []byte, depth int) ([][]byte, error) {
	s := scanner{data: raw}
	s.skipSpace()
	if s.pos >= len(raw) || raw[s.pos] != '[' {
		return nil, &FieldError{Reason: "body must be a JSON array"}
	}
	var elems [][]byte
	err := s.array(depth, func(v []byte) { elems = append(elems, v) })
	if err == nil {
		s.skipSpace()
		if s.pos < len(raw) {
			err = s.fail("unexpected data after the array")
		}
	}
	if err != nil {
		return nil, &FieldError{Reason: "invalid JSON: " + err.Error()}
	}
	return elems, nil
}
