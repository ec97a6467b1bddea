package store

import (
	"encoding/binary"
	"encoding/json"
	"time"
)

// PostgreSQL's type OIDs for the array elements the store sends.
const (
	textOID        = 25
	timestamptzOID = 1184
	jsonbOID       = 3802
)

// postgresEpoch is where PostgreSQL's binary timestamps count from, in Unix microseconds.
const postgresEpoch = 946_684_800_000_000

// params encodes a statement's parameters, one-dimensional arrays in PostgreSQL's binary
// format, into one buffer that is reused from flush to flush. pgx's generic encoder boxes every
// element and grows a fresh buffer for each statement: it was the sink's largest allocator.
type params struct {
	buf   []byte
	ends  []int // where each parameter ends in buf
	flags int   // where the current array's has-nulls flag is
}

func (p *params) reset() {
	p.buf, p.ends = p.buf[:0], p.ends[:0]
}

// values returns the parameters, pointing into the buffer: they are valid until the next reset.
func (p *params) values() [][]byte {
	out := make([][]byte, len(p.ends))
	start := 0
	for i, end := range p.ends {
		out[i], start = p.buf[start:end], end
	}
	return out
}

// array starts an array of n elements of type oid; its elements follow, then end.
func (p *params) array(oid uint32, n int) {
	p.buf = binary.BigEndian.AppendUint32(p.buf, 1) // dimensions
	p.flags = len(p.buf)
	p.buf = binary.BigEndian.AppendUint32(p.buf, 0) // has nulls
	p.buf = binary.BigEndian.AppendUint32(p.buf, oid)
	p.buf = binary.BigEndian.AppendUint32(p.buf, uint32(n)) // length
	p.buf = binary.BigEndian.AppendUint32(p.buf, 1)         // lower bound
}

func (p *params) end() { p.ends = append(p.ends, len(p.buf)) }

func (p *params) null() {
	binary.BigEndian.PutUint32(p.buf[p.flags:], 1)
	p.buf = binary.BigEndian.AppendUint32(p.buf, 0xFFFFFFFF) // length -1
}

// text appends a text element; "" is NULL.
func (p *params) text(s string) {
	if s == "" {
		p.null()
		return
	}
	p.buf = binary.BigEndian.AppendUint32(p.buf, uint32(len(s)))
	p.buf = append(p.buf, s...)
}

// time appends a timestamptz element, to the microsecond as pgx does; the zero time is NULL.
func (p *params) time(t time.Time) {
	if t.IsZero() {
		p.null()
		return
	}
	us := t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - postgresEpoch
	p.buf = binary.BigEndian.AppendUint32(p.buf, 8)
	p.buf = binary.BigEndian.AppendUint64(p.buf, uint64(us))
}

// json appends a jsonb element (version 1, then the text); nil is NULL.
func (p *params) json(raw json.RawMessage) {
	if raw == nil {
		p.null()
		return
	}
	p.buf = binary.BigEndian.AppendUint32(p.buf, uint32(1+len(raw)))
	p.buf = append(p.buf, 1)
	p.buf = append(p.buf, raw...)
}
