package event

import (
	"strconv"
	"unicode/utf8"
)

// MaxDepth is how deeply objects and arrays may nest inside an event. Real events stay under
// ten; the limit keeps a hostile body from costing the sink or PostgreSQL's jsonb parser much.
const MaxDepth = 64

// PostgreSQL's numeric, which jsonb stores numbers in, holds at most this many digits before the
// decimal point and after it. A number past either would fail its whole flush, so it is refused
// up front (measured on PostgreSQL 15: 1e131071 and 1e-16383 are stored, 1e131072 and 1e-16384
// are not).
const (
	maxNumericWeight = 131072
	maxNumericScale  = 16383
)

// scanner validates JSON in one pass over the bytes, with no allocation: the syntax (RFC 8259),
// and the text PostgreSQL cannot store (\u0000, lone UTF-16 surrogates, invalid UTF-8). It is
// the decoder's hot path; encoding/json would need four passes (validate, decode, then the text
// checks) and a map.
type scanner struct {
	data []byte
	pos  int
	// key is the raw key of the top-level member being scanned, to name it in errors.
	key []byte
	// text is set, and scanning goes on, when a string holds text PostgreSQL cannot store, so
	// that the caller can name the field that holds it.
	text string
}

// syntaxError is malformed JSON, with the byte offset where it was found.
type syntaxError struct {
	msg string
	pos int
}

func (e *syntaxError) Error() string { return e.msg + " at byte " + strconv.Itoa(e.pos) }

func (s *scanner) fail(msg string) error { return &syntaxError{msg: msg, pos: s.pos} }

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// object scans an object at s.pos, calling member for each of its members with the raw key
// (quotes included), whether the key has escapes, and the raw value.
func (s *scanner) object(depth int, member func(key []byte, escaped bool, value []byte)) error {
	if depth > MaxDepth {
		return s.fail("nested deeper than " + strconv.Itoa(MaxDepth) + " levels")
	}
	s.pos++ // '{'
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.fail("expected a string key")
		}
		keyStart := s.pos
		escaped, err := s.string()
		if err != nil {
			return err
		}
		key := s.data[keyStart:s.pos]
		if depth == 1 {
			s.key = key
		}
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.fail("expected ':' after an object key")
		}
		s.pos++
		s.skipSpace()
		valueStart := s.pos
		if err := s.value(depth); err != nil {
			return err
		}
		if member != nil {
			member(key, escaped, s.data[valueStart:s.pos])
		}
		if depth == 1 {
			s.key = nil // between members, an error is in no field
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.fail("unexpected end of input in an object")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.fail("expected ',' or '}' in an object")
		}
	}
}

// array scans an array at s.pos, calling element for each element's raw bytes.
func (s *scanner) array(depth int, element func(value []byte)) error {
	if depth > MaxDepth {
		return s.fail("nested deeper than " + strconv.Itoa(MaxDepth) + " levels")
	}
	s.pos++ // '['
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		start := s.pos
		if err := s.value(depth); err != nil {
			return err
		}
		if element != nil {
			element(s.data[start:s.pos])
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.fail("unexpected end of input in an array")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.fail("expected ',' or ']' in an array")
		}
	}
}

// value scans any JSON value at s.pos, nested at depth.
func (s *scanner) value(depth int) error {
	if s.pos >= len(s.data) {
		return s.fail("unexpected end of input")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth+1, nil)
	case c == '[':
		return s.array(depth+1, nil)
	case c == '"':
		_, err := s.string()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.fail("invalid character " + strconv.QuoteRune(rune(c)))
	}
}

func (s *scanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.fail("invalid literal")
	}
	s.pos += len(word)
	return nil
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and notes a number PostgreSQL's
// numeric cannot hold. Numbers beyond float64 or int64 are fine: jsonb keeps them exactly.
func (s *scanner) number() error {
	if s.data[s.pos] == '-' {
		s.pos++
	}
	intDigits, fracDigits := 0, 0
	switch {
	case s.pos < len(s.data) && s.data[s.pos] == '0':
		s.pos++
	case s.pos < len(s.data) && s.data[s.pos] >= '1' && s.data[s.pos] <= '9':
		intDigits = s.digits()
	default:
		return s.fail("invalid number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if fracDigits = s.digits(); fracDigits == 0 {
			return s.fail("invalid number: no digit after the decimal point")
		}
	}
	exp := 0
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		sign := 1
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			if s.data[s.pos] == '-' {
				sign = -1
			}
			s.pos++
		}
		start := s.pos
		if s.digits() == 0 {
			return s.fail("invalid number: no digit in the exponent")
		}
		for _, c := range s.data[start:s.pos] {
			exp = min(exp*10+int(c-'0'), 10*maxNumericWeight) // clamped: only the bounds matter
		}
		exp *= sign
	}
	if intDigits+exp > maxNumericWeight || fracDigits-exp > maxNumericScale {
		s.noteText("holds a number too large or too precise for PostgreSQL's numeric")
	}
	return nil
}

func (s *scanner) digits() int {
	start := s.pos
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
	}
	return s.pos - start
}

// string scans a string at s.pos (its opening quote) and reports whether it has escapes.
func (s *scanner) string() (escaped bool, err error) {
	s.pos++
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return escaped, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return escaped, err
			}
		case c < 0x20:
			return escaped, s.fail("control character in a string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size == 1 {
				s.noteText("contains invalid UTF-8")
			}
			s.pos += size
		}
	}
	return escaped, s.fail("unexpected end of input in a string")
}

// escape scans one escape sequence at s.pos (its backslash).
func (s *scanner) escape() error {
	if s.pos+1 >= len(s.data) {
		return s.fail("unexpected end of input in a string")
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
	default:
		return s.fail("invalid escape in a string")
	}
	r, ok := s.hex4(s.pos + 2)
	if !ok {
		return s.fail("invalid \\u escape in a string")
	}
	s.pos += 6
	switch {
	case r == 0:
		s.noteText(`contains \u0000, which PostgreSQL cannot store`)
	case r >= 0xD800 && r < 0xDC00:
		// A high surrogate must be followed by a low one.
		if s.pos+1 < len(s.data) && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
			if low, ok := s.hex4(s.pos + 2); ok && low >= 0xDC00 && low < 0xE000 {
				s.pos += 6
				return nil
			}
		}
		s.noteText("contains a lone UTF-16 surrogate, which PostgreSQL cannot store")
	case r >= 0xDC00 && r < 0xE000:
		s.noteText("contains a lone UTF-16 surrogate, which PostgreSQL cannot store")
	}
	return nil
}

func (s *scanner) hex4(at int) (rune, bool) {
	if at+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

func (s *scanner) noteText(problem string) {
	if s.text == "" {
		s.text = problem
	}
}
