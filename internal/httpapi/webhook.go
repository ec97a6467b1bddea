package httpapi

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"

	"github.com/segment-sink/segment-sink/internal/event"
)

// Request errors; fail maps each to its status.
var (
	errUnauthorized = errors.New("unauthorized")
	errTooLarge     = errors.New("request body too large")
	errBadBody      = errors.New("bad request body")
	errMediaType    = errors.New("unsupported Content-Type")
)

// fieldError is an invalid event, with its position in an array body (-1 for a lone event).
type fieldError struct {
	*event.FieldError
	index int
}

// webhook receives Segment's Webhooks destination: one event as a JSON object, or (Webhooks
// (Actions) with batching) a JSON array of events. Every event of the request is valid and
// committed, or none is stored.
func (s *Server) webhook(c *gin.Context) {
	body, err := s.readLimited(c, s.cfg.MaxBodyBytes)
	if err != nil {
		s.fail(c, err)
		return
	}
	raws, isArray, err := s.webhookEvents(body, c.GetHeader("X-Signature"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Set(bodyKey, body)
	c.Set(eventsKey, len(raws))
	now := s.cfg.Now()
	events := make([]event.Event, len(raws))
	for i, raw := range raws {
		if events[i], err = event.Decode(raw, now); err != nil {
			if !isArray {
				i = -1
			}
			s.fail(c, withIndex(err, i))
			return
		}
	}
	s.submit(c, events, nil)
}

// webhookEvents splits the body into raw events and checks the signature: over the whole raw
// body for an object, over the exact bytes of the first element for an array (Segment signs
// batches that way).
func (s *Server) webhookEvents(body []byte, signature string) (raws [][]byte, isArray bool, err error) {
	trimmed := event.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '[' {
		if err := s.mac.verify(signature, body); err != nil {
			return nil, false, err
		}
		return [][]byte{body}, false, nil
	}
	// An array is signed over its first element, so it must be split before it can be checked:
	// one that does not parse is refused unauthenticated.
	raws, err = event.SplitArray(trimmed)
	if err != nil {
		return nil, true, fmt.Errorf("%w: %v", errBadBody, err)
	}
	if len(raws) == 0 {
		return nil, true, fmt.Errorf("%w: the array holds no events", errBadBody)
	}
	if err := s.mac.verify(signature, raws[0]); err != nil {
		return nil, true, err
	}
	return raws, true, nil
}

// withIndex attaches an event's position in its request to a decoding error.
func withIndex(err error, index int) error {
	var fe *event.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	return &fieldError{FieldError: fe, index: index}
}

// readLimited reads the whole body, refusing one over limit bytes as soon as it is known to be,
// and one whose Content-Type says it is not JSON. Missing, application/json and text/plain
// (what browsers' sendBeacon sends) are taken as JSON.
func (s *Server) readLimited(c *gin.Context, limit int64) ([]byte, error) {
	if ct := c.GetHeader("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "application/json", "text/plain":
		default:
			return nil, fmt.Errorf("%w %q: send application/json", errMediaType, mt)
		}
	}
	if c.Request.ContentLength > limit {
		return nil, fmt.Errorf("%w: over %d bytes", errTooLarge, limit)
	}
	if err := s.sub.Admit(max(c.Request.ContentLength, 0)); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if n := c.Request.ContentLength; n > 0 {
		// ReadFrom wants MinRead bytes free to see the end: without them a body of exactly
		// Content-Length bytes would be copied into a buffer twice its size.
		buf.Grow(int(n) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, fmt.Errorf("%w: over %d bytes", errTooLarge, limit)
	case err != nil && !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: read: %v", errBadBody, err)
	}
	return buf.Bytes(), nil
}

// signer checks X-Signature: the lowercase hex HMAC-SHA1 of the signed bytes under any of the
// shared secrets (several, so that a secret can be rotated without downtime).
type signer struct {
	keys []*sync.Pool // per secret, reusable HMAC states: hmac.New costs more than the MAC
}

func newSigner(secrets []string) *signer {
	s := &signer{}
	for _, k := range secrets {
		if k != "" {
			key := []byte(k)
			s.keys = append(s.keys, &sync.Pool{New: func() any { return hmac.New(sha1.New, key) }})
		}
	}
	return s
}

func (s *signer) verify(header string, signed []byte) error {
	if len(s.keys) == 0 {
		return nil
	}
	if header == "" {
		return fmt.Errorf("%w: missing X-Signature header", errUnauthorized)
	}
	got, err := hex.DecodeString(header)
	if err != nil || len(got) != sha1.Size {
		return fmt.Errorf("%w: X-Signature is not a hex HMAC-SHA1", errUnauthorized)
	}
	// Every key is tried, whatever matches, so that timing tells nothing about which one did.
	ok := 0
	var sum [sha1.Size]byte
	for _, pool := range s.keys {
		m := pool.Get().(hash.Hash)
		m.Reset()
		m.Write(signed)
		if hmac.Equal(m.Sum(sum[:0]), got) {
			ok = 1
		}
		pool.Put(m)
	}
	if ok == 0 {
		return fmt.Errorf("%w: X-Signature does not match the request", errUnauthorized)
	}
	return nil
}

// Sign returns the X-Signature value for body under secret, as Segment computes it.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
