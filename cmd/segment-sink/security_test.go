package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segment-sink/segment-sink/internal/event"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns their paths and a
// pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "segment-sink test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	s := startSink(t, map[string]string{"TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile})
	if !strings.HasPrefix(s.url, "https://") {
		t.Fatalf("listening on %s, want https", s.url)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post(s.url+"/webhook", "application/json", strings.NewReader(trackEvent("tls-1", "u")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("POST over TLS = %d", resp.StatusCode)
	}
	if got := queryInt(t, s.db(t), `SELECT count(*) FROM tracks WHERE message_id = 'tls-1'`); got != 1 {
		t.Errorf("event over TLS not stored")
	}
	// The image's HEALTHCHECK speaks TLS when the sink does.
	tlsEnv := map[string]string{"TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile, "LISTEN_ADDR": strings.TrimPrefix(s.url, "https://")}
	if err := run(t.Context(), []string{"healthcheck"}, func(k string) string { return tlsEnv[k] }, io.Discard, io.Discard); err != nil {
		t.Errorf("healthcheck of a TLS sink: %v", err)
	}
	// Plain HTTP on the TLS port gets Go's 400, never the API.
	if resp, err := http.Get(strings.Replace(s.url, "https://", "http://", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP served on the TLS port")
		}
	}
}

func TestClientIPComesFromTrustedProxiesOnly(t *testing.T) {
	t.Parallel()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(writeKey+":"))
	send := func(s *sink, id string) {
		h := http.Header{"Authorization": {auth}, "X-Forwarded-For": {"198.51.100.23"}}
		if status, body := s.do(t, "/v1/track", h, `{"messageId":"`+id+`","userId":"u","event":"E"}`); status != http.StatusOK {
			t.Fatalf("track = %d %v", status, body)
		}
	}
	direct := startSink(t, map[string]string{"WRITE_KEYS": writeKey})
	send(direct, "ip-direct")
	if got := queryInt(t, direct.db(t), `SELECT count(*) FROM tracks WHERE message_id = 'ip-direct' AND context->>'ip' = '127.0.0.1'`); got != 1 {
		t.Errorf("without trusted proxies, X-Forwarded-For must not set context.ip")
	}
	proxied := startSink(t, map[string]string{"WRITE_KEYS": writeKey, "TRUSTED_PROXIES": "127.0.0.1"})
	send(proxied, "ip-proxied")
	if got := queryInt(t, proxied.db(t), `SELECT count(*) FROM tracks WHERE message_id = 'ip-proxied' AND context->>'ip' = '198.51.100.23'`); got != 1 {
		t.Errorf("behind a trusted proxy, context.ip must be the forwarded client")
	}
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"READ_HEADER_TIMEOUT": "300ms"})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /webhook HTTP/1.1\r\nHost: sink\r\n") // and then nothing
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.Copy(io.Discard, conn) // returns when the server closes the connection
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a client stalling in its headers kept the connection for %s", took)
	}
}

// readCorpus returns the seed inputs of the decoder's fuzz corpus: every hostile edge.
func readCorpus(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("../../internal/event/testdata/fuzz/FuzzDecode/edge-*")
	if err != nil || len(paths) < 30 {
		t.Fatalf("edge corpus: %d files, %v", len(paths), err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		raw, _ := os.ReadFile(p)
		_, value, _ := strings.Cut(string(raw), "\n")
		value = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(value), "[]byte("), ")")
		s, err := strconv.Unquote(value)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[filepath.Base(p)] = []byte(s)
	}
	return out
}

// decodeBody is what the decoder says of a webhook body: one event, or an array of them.
func decodeBody(raw []byte) error {
	if !strings.HasPrefix(string(raw), "[") {
		_, err := event.Decode(raw, time.Now())
		return err
	}
	elems, err := event.SplitArray(raw)
	for _, e := range elems {
		if err == nil {
			_, err = event.Decode(e, time.Now())
		}
	}
	return err
}

func TestEveryHostileEdgeAmongGoodEvents(t *testing.T) {
	t.Parallel()
	s := startSink(t, map[string]string{"SHARED_SECRET": secret})
	conn := s.db(t)
	edges := readCorpus(t)
	var wg sync.WaitGroup
	for name, raw := range edges {
		wg.Go(func() {
			// Each edge between two good events, all at once: they share flushes.
			goodBefore, goodAfter := trackEvent("good-before-"+name, "u"), trackEvent("good-after-"+name, "u")
			var inner sync.WaitGroup
			for _, good := range []string{goodBefore, goodAfter} {
				inner.Go(func() {
					if status, body := s.post(t, "/webhook", secret, good); status != http.StatusOK {
						t.Errorf("%s: a good event beside it = %d %v", name, status, body)
					}
				})
			}
			decodeErr := decodeBody(raw)
			var status int
			var body map[string]any
			if strings.HasPrefix(string(raw), "[") { // an array is signed over its first element
				status, body = s.do(t, "/webhook", http.Header{"X-Signature": {signFirst(t, string(raw))}}, string(raw))
			} else {
				status, body = s.post(t, "/webhook", secret, string(raw))
			}
			switch {
			case decodeErr == nil && status != http.StatusOK:
				t.Errorf("%s: accepted by the decoder but answered %d %v", name, status, body)
			case decodeErr != nil && status != http.StatusBadRequest:
				t.Errorf("%s: refused by the decoder (%v) but answered %d %v", name, decodeErr, status, body)
			case decodeErr != nil && body["error"] == nil:
				t.Errorf("%s: a 400 without an error message", name)
			}
			inner.Wait()
		})
	}
	wg.Wait()
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id LIKE 'good-%'`); got != 2*len(edges) {
		t.Errorf("good events stored = %d, want %d", got, 2*len(edges))
	}
	// Every refused edge is in quarantine (the sender was authenticated), byte for byte.
	for name, raw := range edges {
		if decodeBody(raw) == nil {
			continue
		}
		if got := queryInt(t, conn, `SELECT count(*) FROM rejected_events WHERE body = $1`, raw); got != 1 {
			t.Errorf("%s: kept %d times in quarantine, want 1", name, got)
		}
	}
	if status, _ := s.get(t, "/healthz"); status != http.StatusOK {
		t.Errorf("the sink is not healthy after the edges")
	}
	// A body that is not JSON at all by its Content-Type.
	h := http.Header{"X-Signature": {signWith(secret, "a=1")}}
	req, _ := http.NewRequest(http.MethodPost, s.url+"/webhook", strings.NewReader("a=1"))
	req.Header = h
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("a form body = %d, want 415", resp.StatusCode)
	}
}
