package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestSignerVerify(t *testing.T) {
	t.Parallel()
	body := []byte(`{"type":"track","userId":"u","event":"E"}`)
	tests := []struct {
		name    string
		secrets []string
		header  string
		wantErr string // "" means accepted
	}{
		{"no secrets accept unsigned", nil, "", ""},
		{"no secrets ignore a signature", nil, "deadbeef", ""},
		{"right signature", []string{"s1"}, Sign("s1", body), ""},
		{"uppercase hex is the same signature", []string{"s1"}, strings.ToUpper(Sign("s1", body)), ""},
		{"second of two secrets", []string{"old", "new"}, Sign("new", body), ""},
		{"first of two secrets", []string{"old", "new"}, Sign("old", body), ""},
		{"empty secrets are ignored", []string{"", "s1"}, Sign("", body), "does not match"},
		{"missing", []string{"s1"}, "", "missing X-Signature"},
		{"wrong secret", []string{"s1"}, Sign("s2", body), "does not match"},
		{"other bytes", []string{"s1"}, Sign("s1", append(body, ' ')), "does not match"},
		{"not hex", []string{"s1"}, "not-hex", "not a hex HMAC-SHA1"},
		{"too short", []string{"s1"}, Sign("s1", body)[:38], "not a hex HMAC-SHA1"},
		{"sha256 prefix form", []string{"s1"}, "sha1=" + Sign("s1", body), "not a hex HMAC-SHA1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := newSigner(tt.secrets).verify(tt.header, body)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("verify = %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, errUnauthorized) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("verify = %v, want unauthorized: %q", err, tt.wantErr)
			}
		})
	}
}

func TestSignMatchesSegment(t *testing.T) {
	t.Parallel()
	// HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog"), a published test vector.
	got := Sign("key", []byte("The quick brown fox jumps over the lazy dog"))
	if want := "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"; got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestPanicsBecomeA500JSONAnswer(t *testing.T) {
	t.Parallel()
	s := &Server{cfg: Config{Logger: slog.New(slog.DiscardHandler)}}
	r := gin.New()
	r.Use(s.recoverJSON)
	r.GET("/boom", func(*gin.Context) { panic("boom") })
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/boom", nil))
	if w.Code != http.StatusInternalServerError || w.Body.String() != `{"error":"internal error"}` {
		t.Errorf("panic answered %d %q", w.Code, w.Body.String())
	}
}

func FuzzSignature(f *testing.F) {
	f.Add([]byte(`{"type":"track"}`), "s3cret", "")
	f.Add([]byte(`[{"a":1},{"b":2}]`), "k", "zz")
	f.Add([]byte{}, "", "00")
	f.Fuzz(func(t *testing.T, body []byte, secret, header string) {
		if secret == "" {
			return
		}
		s := newSigner([]string{"other", secret})
		// The right signature passes, whatever the body; any other header fails without panicking.
		if err := s.verify(Sign(secret, body), body); err != nil {
			t.Fatalf("the right signature failed: %v", err)
		}
		if header != Sign(secret, body) && header != Sign("other", body) && !strings.EqualFold(header, Sign(secret, body)) && !strings.EqualFold(header, Sign("other", body)) {
			if err := s.verify(header, body); !errors.Is(err, errUnauthorized) {
				t.Fatalf("header %q passed for a body it does not sign: %v", header, err)
			}
		}
	})
}
