// Package event is segment-sink's domain: the six Segment event types, the decoding of one raw
// JSON event into a validated and normalised Event, and the errors that say why an event cannot
// be accepted. It imports nothing else of segment-sink; every other package may import it.
package event

import (
	"encoding/json"
	"errors"
	"time"
	"unsafe"
)

// Type is one of the six Segment event types.
type Type uint8

// The six Segment event types, in the order of the spec.
const (
	Identify Type = iota + 1
	Track
	Page
	Screen
	Group
	Alias
)

// Types lists every event type, for code that walks all tables.
var Types = [...]Type{Identify, Track, Page, Screen, Group, Alias}

var typeNames = [...]string{Identify: "identify", Track: "track", Page: "page", Screen: "screen", Group: "group", Alias: "alias"}

var tableNames = [...]string{Identify: "identifies", Track: "tracks", Page: "pages", Screen: "screens", Group: "groups", Alias: "aliases"}

// String returns the type's name as Segment spells it in the `type` field.
func (t Type) String() string {
	if t < Identify || t > Alias {
		return "unknown"
	}
	return typeNames[t]
}

// Table returns the name of the PostgreSQL table that holds events of this type.
func (t Type) Table() string {
	if t < Identify || t > Alias {
		return ""
	}
	return tableNames[t]
}

// Event is one validated, normalised Segment event, ready to be stored. Empty strings, zero times
// and nil JSON mean the field was absent (or null) and are stored as NULL.
type Event struct {
	Type              Type
	MessageID         string
	UserID            string
	AnonymousID       string
	Timestamp         time.Time
	OriginalTimestamp time.Time
	SentAt            time.Time
	ReceivedAt        time.Time
	Context           json.RawMessage
	Integrations      json.RawMessage

	// Event is the name of a track event.
	Event string
	// Properties belongs to track, page and screen events.
	Properties json.RawMessage
	// Traits belongs to identify and group events.
	Traits json.RawMessage
	// Name and Category belong to page and screen events.
	Name     string
	Category string
	// GroupID belongs to group events.
	GroupID string
	// PreviousID belongs to alias events.
	PreviousID string

	// Extra is a JSON object with every top-level field that has no column of its own in the
	// event's table, so that nothing the sender sent is lost. Nil when there is none.
	Extra json.RawMessage

	// Size is what the event costs in memory while it waits to be written: the raw JSON it was
	// decoded from (its values point into it) and the Event itself.
	Size int
}

// eventSize is the memory an Event takes besides the raw JSON it points into.
const eventSize = int(unsafe.Sizeof(Event{}))

// Errors that cross the layers of the sink. Each maps to one HTTP answer in httpapi.
var (
	// ErrOverloaded means the sink holds as many waiting events as it may; the sender should
	// retry later.
	ErrOverloaded = errors.New("too many events waiting to be written")
	// ErrUnavailable means the database could not be written; the sender should retry later.
	ErrUnavailable = errors.New("database unavailable")
	// ErrUnstorable means the database refused the data itself: retrying the same event will
	// fail the same way.
	ErrUnstorable = errors.New("database rejected the event")
	// ErrClosed means the sink is shutting down and accepts no more events.
	ErrClosed = errors.New("sink is shutting down")
)

// FieldError says why an event is invalid: which field, and what is wrong with it. Field is
// empty when the event as a whole is wrong (not an object, not JSON).
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Rejection is a refused request (or one refused event of a batch) kept in quarantine: the
// bytes as received, where they were sent, and why they were refused.
type Rejection struct {
	ReceivedAt  time.Time
	Path        string
	Status      int
	Reason      string
	Error       string
	Field       string
	Index       int // the event's position in its request; -1 for none
	ContentType string
	Body        []byte
}
