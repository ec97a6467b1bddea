package httpapi

import (
	"strings"
	"testing"
)

func BenchmarkSignatureCheck(b *testing.B) {
	body := []byte(`{"type":"track","userId":"u","event":"E","properties":{"pad":"` + strings.Repeat("x", 700) + `"}}`)
	s := newSigner([]string{"old-secret", "new-secret"})
	sig := Sign("new-secret", body)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := s.verify(sig, body); err != nil {
			b.Fatal(err)
		}
	}
}
