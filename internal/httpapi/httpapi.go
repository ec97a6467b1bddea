// Package httpapi is segment-sink's HTTP face, built on Gin: it authenticates requests, reads
// and decodes their events, hands them to the batcher, and turns the outcome into one HTTP
// answer. Errors become statuses here and nowhere else.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/segment-sink/segment-sink/internal/event"
)

// Submitter waits until events are committed; the batcher satisfies it.
type Submitter interface {
	// Admit says whether a request of that many bytes can be taken now, before its body is read.
	Admit(bytes int64) error
	Submit(ctx context.Context, events []event.Event) error
}

// ReadinessChecker reports whether the sink can take events now.
type ReadinessChecker interface {
	Ready(ctx context.Context) error
}

// Quarantiner keeps refused requests; the store satisfies it.
type Quarantiner interface {
	Quarantine(ctx context.Context, rejections []event.Rejection) error
}

// Observer is told what the handlers did; metrics.Metrics satisfies it.
type Observer interface {
	// Answered is called once per request, with its route ("" when none matched).
	Answered(path string, status int, took time.Duration)
	// Accepted is called with the events of a request once they are committed.
	Accepted(events []event.Event)
	// Rejected is called with the number of events a request could not store, and why.
	Rejected(reason string, n int)
}

// RetryAfterSeconds is what a 503 asks the sender to wait.
const RetryAfterSeconds = "1"

// Config is what the handlers need to know. MaxBodyBytes and AckTimeout must be set.
type Config struct {
	// Secrets are the shared secrets that may sign webhook requests; empty accepts unsigned ones.
	Secrets []string
	// WriteKeys are the write keys the tracking API (/v1/*) accepts. With none, the tracking
	// API answers 404 unless TrackingOpen is set, when it accepts any request.
	WriteKeys    []string
	TrackingOpen bool
	// MaxBodyBytes caps a request body; a larger one gets 413 without being read to the end.
	MaxBodyBytes int64
	// AckTimeout bounds how long a request waits for its events to be committed before it is
	// answered 503, well inside Segment's 5-second timeout.
	AckTimeout time.Duration
	Logger     *slog.Logger
	// Now is the clock that stamps receivedAt; nil means time.Now.
	Now func() time.Time
	// Observer, if set, is told about every request.
	Observer Observer
	// Metrics, if set, is served at GET /metrics.
	Metrics http.Handler
	// Quarantine, if set, keeps what authenticated senders sent that was refused.
	Quarantine Quarantiner
	// TrustedProxies are the proxies whose X-Forwarded-For gives the client's IP; none by
	// default, so that a client cannot choose its own IP.
	TrustedProxies []string
}

// Server holds the handlers' dependencies.
type Server struct {
	cfg   Config
	sub   Submitter
	ready ReadinessChecker
	mac   *signer

	writeKeys [][]byte
}

// New returns the HTTP handler for every route of the sink. It fails on a malformed proxy list.
func New(cfg Config, sub Submitter, ready ReadinessChecker) (http.Handler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, sub: sub, ready: ready, mac: newSigner(cfg.Secrets)}
	for _, k := range cfg.WriteKeys {
		if k != "" {
			s.writeKeys = append(s.writeKeys, []byte(k))
		}
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	if err := r.SetTrustedProxies(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	if cfg.Observer != nil {
		r.Use(s.observe)
	}
	r.Use(s.recoverJSON)
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { abort(c, http.StatusNotFound, errorBody{Error: "no such endpoint"}) })
	r.NoMethod(func(c *gin.Context) { abort(c, http.StatusMethodNotAllowed, errorBody{Error: "method not allowed"}) })
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.readyz)
	if cfg.Metrics != nil {
		r.GET("/metrics", gin.WrapH(cfg.Metrics))
	}
	r.POST("/webhook", s.webhook)
	s.trackingRoutes(r)
	return r, nil
}

// errorBody is every error answer. Field and Index say which event and field were invalid.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	Index *int   `json:"index,omitempty"`
}

func abort(c *gin.Context, status int, body errorBody) {
	c.AbortWithStatusJSON(status, body)
}

func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.ready.Ready(ctx); err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "unavailable", "error": err.Error()})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}

// submit waits for the events' commit and answers the request, adding extra to the body.
func (s *Server) submit(c *gin.Context, events []event.Event, extra gin.H) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.AckTimeout)
	defer cancel()
	if err := s.sub.Submit(ctx, events); err != nil {
		s.fail(c, err)
		return
	}
	if s.cfg.Observer != nil {
		s.cfg.Observer.Accepted(events)
	}
	if extra == nil {
		// The answer to nearly every request: written without reflection.
		c.Data(http.StatusOK, "application/json; charset=utf-8", fmt.Appendf(nil, `{"status":"ok","events":%d}`, len(events)))
		return
	}
	body := gin.H{"status": "ok", "events": len(events)}
	for k, v := range extra {
		body[k] = v
	}
	c.JSON(http.StatusOK, body)
}

// Keys of what a handler leaves in the request's context for fail.
const (
	// eventsKey holds how many events the request carried, for the rejection count.
	eventsKey = "segment-sink.events"
	// bodyKey holds the request's body once its sender is authenticated: only then is a refused
	// request kept in quarantine.
	bodyKey = "segment-sink.body"
)

// answer is what a failed request is told, and how the refusal is counted and logged.
type answer struct {
	status int
	reason string // for the metrics and the quarantine
	body   errorBody
	retry  bool       // ask the sender to retry later (Retry-After)
	level  slog.Level // for the log line; client mistakes are debug
}

// answerFor maps an error to its answer: the one place errors become statuses.
func answerFor(err error) answer {
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		body := errorBody{Error: fe.Error(), Field: fe.Field}
		if fe.index >= 0 {
			body.Index = &fe.index
		}
		return answer{status: http.StatusBadRequest, reason: "invalid", body: body, level: slog.LevelDebug}
	case errors.Is(err, errUnauthorized):
		return answer{status: http.StatusUnauthorized, reason: "unauthorized", body: errorBody{Error: err.Error()}, level: slog.LevelDebug}
	case errors.Is(err, errTooLarge):
		return answer{status: http.StatusRequestEntityTooLarge, reason: "too_large", body: errorBody{Error: err.Error()}, level: slog.LevelDebug}
	case errors.Is(err, errBadBody):
		return answer{status: http.StatusBadRequest, reason: "invalid", body: errorBody{Error: err.Error()}, level: slog.LevelDebug}
	case errors.Is(err, errMediaType):
		return answer{status: http.StatusUnsupportedMediaType, reason: "invalid", body: errorBody{Error: err.Error()}, level: slog.LevelDebug}
	case errors.Is(err, event.ErrUnstorable):
		// Validation let through something PostgreSQL refuses. Retrying cannot help, so the
		// sender must not retry: 400, and the detail in the log.
		return answer{status: http.StatusBadRequest, reason: "unstorable", level: slog.LevelWarn,
			body: errorBody{Error: "the database refused an event of this request; see the sink's log"}}
	case errors.Is(err, event.ErrOverloaded):
		return answer{status: http.StatusServiceUnavailable, reason: "overloaded", retry: true, level: slog.LevelDebug,
			body: errorBody{Error: "too many events waiting to be written; retry later"}}
	case errors.Is(err, event.ErrClosed):
		return answer{status: http.StatusServiceUnavailable, reason: "shutting_down", retry: true, level: slog.LevelDebug,
			body: errorBody{Error: "the sink is shutting down; retry later"}}
	case errors.Is(err, event.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return answer{status: http.StatusServiceUnavailable, reason: "unavailable", retry: true, level: slog.LevelWarn,
			body: errorBody{Error: "the database did not commit the events in time; retry later"}}
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		return answer{status: 499, reason: "canceled", body: errorBody{Error: "client closed the request"}, level: slog.LevelDebug}
	default:
		return answer{status: http.StatusInternalServerError, reason: "internal", body: errorBody{Error: "internal error"}, level: slog.LevelError}
	}
}

// fail answers a failed request, counts and logs the refusal, and keeps the request in
// quarantine when its sender was authenticated and it was refused for its content.
func (s *Server) fail(c *gin.Context, err error) {
	a := answerFor(err)
	if s.cfg.Observer != nil {
		n := c.GetInt(eventsKey)
		if n == 0 {
			n = 1 // the request was refused before its events were counted
		}
		s.cfg.Observer.Rejected(a.reason, n)
	}
	s.cfg.Logger.Log(c.Request.Context(), a.level, "request refused", "path", c.FullPath(), "status", a.status,
		"reason", a.reason, "error", err.Error())
	if body, ok := c.Get(bodyKey); ok && a.status == http.StatusBadRequest {
		index := -1
		if a.body.Index != nil {
			index = *a.body.Index
		}
		s.quarantine(c, event.Rejection{Status: a.status, Reason: a.reason, Error: a.body.Error, Field: a.body.Field,
			Index: index, Body: body.([]byte)})
	}
	if a.retry {
		c.Header("Retry-After", RetryAfterSeconds)
	}
	abort(c, a.status, a.body)
}

// ReplayHeader marks a request sent again by `segment-sink rejected replay`, with the id of its
// quarantined original: refused again, it is not kept a second time.
const ReplayHeader = "X-Segment-Sink-Replay-Of"

// quarantine keeps refused requests; a failure to keep them is logged and changes no answer.
func (s *Server) quarantine(c *gin.Context, rejections ...event.Rejection) {
	if s.cfg.Quarantine == nil || c.GetHeader(ReplayHeader) != "" {
		return
	}
	now := s.cfg.Now()
	for i := range rejections {
		r := &rejections[i]
		r.ReceivedAt, r.Path = now, c.FullPath()
		if r.ContentType == "" {
			r.ContentType = "application/json"
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), 2*time.Second)
	defer cancel()
	if err := s.cfg.Quarantine.Quarantine(ctx, rejections); err != nil {
		s.cfg.Logger.Error("could not keep a refused request in quarantine", "path", c.FullPath(), "error", err)
	}
}

// observe reports every answered request to the Observer.
func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	s.cfg.Observer.Answered(c.FullPath(), c.Writer.Status(), time.Since(start))
}

// recoverJSON answers a panic with a 500 JSON body instead of a dropped connection.
func (s *Server) recoverJSON(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.cfg.Logger.Error("panic in handler", "path", c.FullPath(), "panic", p)
			abort(c, http.StatusInternalServerError, errorBody{Error: "internal error"})
		}
	}()
	c.Next()
}
