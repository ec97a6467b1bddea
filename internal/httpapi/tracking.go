package httpapi

import (
	"bytes"
	"compress/gzip"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/segment-sink/segment-sink/internal/event"
)

// Segment's own limits for the HTTP Tracking API, so that what an SDK may send is what we take.
const (
	MaxTrackingEventBytes  = 32 << 10
	MaxTrackingBatchBytes  = 500 << 10
	MaxTrackingBatchEvents = 2500
)

// trackingRoutes mounts Segment's HTTP Tracking API, which Segment's SDKs speak: one endpoint
// per event type, and /v1/batch (with its alias /v1/import).
func (s *Server) trackingRoutes(r *gin.Engine) {
	v1 := r.Group("/v1", s.trackingEnabled)
	for _, t := range event.Types {
		v1.POST("/"+t.String(), s.trackOne(t))
	}
	v1.POST("/batch", s.trackBatch)
	v1.POST("/import", s.trackBatch)
}

// trackingEnabled keeps the tracking API closed (404) unless write keys are configured or it
// was opened on purpose: a collector must never be open by accident.
func (s *Server) trackingEnabled(c *gin.Context) {
	if len(s.writeKeys) == 0 && !s.cfg.TrackingOpen {
		abort(c, http.StatusNotFound, errorBody{Error: "the tracking API is off: set WRITE_KEYS to enable it"})
	}
}

func (s *Server) trackOne(t event.Type) gin.HandlerFunc {
	return func(c *gin.Context) {
		body, err := s.readTrackingBody(c, MaxTrackingEventBytes)
		if err != nil {
			s.fail(c, err)
			return
		}
		keyInBody := func() string {
			var key struct {
				WriteKey string `json:"writeKey"`
			}
			_ = json.Unmarshal(body, &key) // a malformed body is reported by the decoder below
			return key.WriteKey
		}
		if err := s.authorize(c, keyInBody); err != nil {
			s.fail(c, err)
			return
		}
		c.Set(bodyKey, body)
		e, err := event.DecodeWith(body, event.Options{Now: s.cfg.Now(), Collect: true, Type: t, ClientIP: c.ClientIP()})
		if err != nil {
			s.fail(c, withIndex(err, -1))
			return
		}
		s.submit(c, []event.Event{e}, nil)
	}
}

// rejection reports one invalid event of a batch.
type rejection struct {
	Index int    `json:"index"`
	Field string `json:"field,omitempty"`
	Error string `json:"error"`
}

// trackBatch takes a batch envelope. As Segment's own API does, it stores the valid events and
// answers 200 even when some are invalid, but it also lists those it rejected, with why; only a
// batch with no valid event at all gets 400. (A 400 would make an SDK drop the whole batch.)
func (s *Server) trackBatch(c *gin.Context) {
	body, err := s.readTrackingBody(c, MaxTrackingBatchBytes)
	if err != nil {
		s.fail(c, err)
		return
	}
	// The envelope is split by the event scanner, not encoding/json, so that the events point
	// into the body: json.RawMessage would copy every one, doubling a batch's memory.
	var envelope struct {
		Batch                                        []json.RawMessage
		Context, Integrations, SentAt, WriteKey, raw json.RawMessage
	}
	err = event.Members(body, func(name string, value []byte) {
		switch name {
		case "batch":
			envelope.raw = value
		case "context":
			envelope.Context = value
		case "integrations":
			envelope.Integrations = value
		case "sentAt":
			envelope.SentAt = value
		case "writeKey":
			envelope.WriteKey = value
		}
	})
	if err == nil && envelope.raw != nil && string(envelope.raw) != "null" {
		var items [][]byte
		if items, err = event.SplitBatch(envelope.raw); err == nil {
			envelope.Batch = make([]json.RawMessage, len(items))
			for i, item := range items {
				envelope.Batch[i] = item
			}
		}
	}
	if err != nil {
		s.fail(c, fmt.Errorf("%w: the body must be a JSON object with a batch array: %v", errBadBody, err))
		return
	}
	keyInBody := func() string {
		var key string
		_ = json.Unmarshal(envelope.WriteKey, &key)
		return key
	}
	if err := s.authorize(c, keyInBody); err != nil {
		s.fail(c, err)
		return
	}
	c.Set(bodyKey, body)
	switch n := len(envelope.Batch); {
	case n == 0:
		s.fail(c, fmt.Errorf("%w: the batch holds no events", errBadBody))
		return
	case n > MaxTrackingBatchEvents:
		s.fail(c, fmt.Errorf("%w: the batch holds %d events; at most %d are allowed", errBadBody, n, MaxTrackingBatchEvents))
		return
	}
	shared, err := batchEnvelope(envelope.Context, envelope.Integrations, envelope.SentAt)
	if err != nil {
		s.fail(c, err)
		return
	}

	c.Set(eventsKey, len(envelope.Batch))
	opts := event.Options{Now: s.cfg.Now(), Collect: true, Batch: shared, ClientIP: c.ClientIP()}
	events := make([]event.Event, 0, len(envelope.Batch))
	var rejected []rejection
	for i, raw := range envelope.Batch {
		if len(raw) > MaxTrackingEventBytes {
			rejected = append(rejected, rejection{Index: i, Error: fmt.Sprintf("event is %d bytes; at most %d are allowed", len(raw), MaxTrackingEventBytes)})
			continue
		}
		e, err := event.DecodeWith(raw, opts)
		var fe *event.FieldError
		if errors.As(err, &fe) {
			rejected = append(rejected, rejection{Index: i, Field: fe.Field, Error: fe.Error()})
			continue
		} else if err != nil {
			s.fail(c, err)
			return
		}
		events = append(events, e)
	}
	if len(rejected) > 0 {
		s.quarantineItems(c, envelope.Batch, envelope.Context, envelope.Integrations, envelope.SentAt, rejected)
	}
	if len(events) == 0 {
		if s.cfg.Observer != nil {
			s.cfg.Observer.Rejected("invalid", len(rejected))
		}
		first := rejected[0]
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{
			"error": "no valid event in the batch: " + first.Error, "field": first.Field, "index": first.Index, "rejected": rejected,
		})
		return
	}
	c.Set(eventsKey, len(events)) // the invalid ones are counted already
	var extra gin.H
	if len(rejected) > 0 {
		if s.cfg.Observer != nil {
			s.cfg.Observer.Rejected("invalid", len(rejected))
		}
		s.cfg.Logger.Info("batch events rejected", "rejected", len(rejected), "accepted", len(events), "first", rejected[0].Error)
		extra = gin.H{"rejected": rejected}
	}
	s.submit(c, events, extra)
}

// quarantineItems keeps each rejected event of a batch as a batch of its own, with the
// envelope's shared fields, so that a replay is read exactly as the original was.
func (s *Server) quarantineItems(c *gin.Context, items []json.RawMessage, context, integrations, sentAt json.RawMessage, rejected []rejection) {
	keep := make([]event.Rejection, 0, len(rejected))
	for _, r := range rejected {
		body, err := json.Marshal(struct {
			Batch        []json.RawMessage `json:"batch"`
			Context      json.RawMessage   `json:"context,omitempty"`
			Integrations json.RawMessage   `json:"integrations,omitempty"`
			SentAt       json.RawMessage   `json:"sentAt,omitempty"`
		}{[]json.RawMessage{items[r.Index]}, context, integrations, sentAt})
		if err != nil {
			body = items[r.Index] // not valid JSON: kept as it came
		}
		keep = append(keep, event.Rejection{Status: http.StatusBadRequest, Reason: "invalid", Error: r.Error,
			Field: r.Field, Index: r.Index, Body: body})
	}
	s.quarantine(c, keep...)
}

// batchEnvelope checks the envelope's shared fields.
func batchEnvelope(context, integrations, sentAt json.RawMessage) (*event.Envelope, error) {
	env := &event.Envelope{}
	for _, f := range [...]struct {
		name string
		raw  json.RawMessage
		dst  *json.RawMessage
	}{{"context", context, &env.Context}, {"integrations", integrations, &env.Integrations}} {
		switch {
		case f.raw == nil || string(f.raw) == "null":
		case f.raw[0] == '{':
			*f.dst = f.raw
		default:
			return nil, fmt.Errorf("%w: the batch's %s must be a JSON object", errBadBody, f.name)
		}
	}
	if sentAt != nil && string(sentAt) != "null" {
		var s string
		if err := json.Unmarshal(sentAt, &s); err != nil {
			return nil, fmt.Errorf("%w: the batch's sentAt must be a date-time string", errBadBody)
		}
		if _, ok := event.ParseTime(s); !ok {
			return nil, fmt.Errorf("%w: the batch's sentAt must be an ISO 8601 date-time with a time zone", errBadBody)
		}
		env.SentAt = sentAt
	}
	return env, nil
}

// authorize checks the write key: the HTTP Basic user name (the SDKs' way), else the body's
// writeKey, which keyInBody reads only when needed (parsing a body for it costs a full pass).
// Every configured key is compared in constant time.
func (s *Server) authorize(c *gin.Context, keyInBody func() string) error {
	if len(s.writeKeys) == 0 {
		return nil // the API is open on purpose; trackingEnabled closed it otherwise
	}
	key, _, ok := c.Request.BasicAuth()
	if !ok {
		key = keyInBody()
	}
	if key == "" {
		return fmt.Errorf("%w: missing write key: send it as the HTTP Basic user name, or as writeKey in the body", errUnauthorized)
	}
	match := 0
	for _, k := range s.writeKeys {
		match |= subtle.ConstantTimeCompare([]byte(key), k)
	}
	if match == 0 {
		return fmt.Errorf("%w: unknown write key", errUnauthorized)
	}
	return nil
}

// readTrackingBody reads a body of at most limit bytes, inflating it when it is gzipped; the
// limit holds for the inflated size too, so a small gzip bomb cannot fill the memory.
func (s *Server) readTrackingBody(c *gin.Context, limit int64) ([]byte, error) {
	body, err := s.readLimited(c, limit)
	if err != nil {
		return nil, err
	}
	switch enc := strings.ToLower(strings.TrimSpace(c.GetHeader("Content-Encoding"))); enc {
	case "", "identity":
		return body, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%w: Content-Encoding is gzip but the body is not: %v", errBadBody, err)
		}
		inflated, err := io.ReadAll(io.LimitReader(zr, limit+1))
		if err != nil {
			return nil, fmt.Errorf("%w: invalid gzip body: %v", errBadBody, err)
		}
		if int64(len(inflated)) > limit {
			return nil, fmt.Errorf("%w: over %d bytes once inflated", errTooLarge, limit)
		}
		return inflated, nil
	default:
		return nil, fmt.Errorf("%w: unsupported Content-Encoding %q: send gzip or nothing", errBadBody, enc)
	}
}
