package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	dto "github.com/prometheus/client_model/go"
)

// scrape reads the metrics at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// value returns the value of the metric with the given labels (counter, gauge, or a
// histogram's sample count), or -1 when there is none.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := families[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func histogramSum(families map[string]*dto.MetricFamily, name string) float64 {
	var sum float64
	for _, m := range families[name].GetMetric() {
		sum += m.GetHistogram().GetSampleSum()
	}
	return sum
}

func TestMetricsCountWhatHappened(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	for _, id := range []string{"m1", "m2", "m3"} {
		if status, _ := s.post(t, "/webhook", "", trackEvent(id, "u")); status != http.StatusOK {
			t.Fatal(status)
		}
	}
	if status, _ := s.post(t, "/webhook", "", `{"type":"identify","messageId":"i1","userId":"u"}`); status != http.StatusOK {
		t.Fatal(status)
	}
	// Two identical redeliveries: accepted again, and absorbed.
	for _, id := range []string{"m1", "m2"} {
		if status, _ := s.post(t, "/webhook", "", trackEvent(id, "u")); status != http.StatusOK {
			t.Fatal(status)
		}
	}
	// One invalid event, then an array of three with one invalid: four events rejected.
	if status, _ := s.post(t, "/webhook", "", `{"type":"track","userId":"u"}`); status != http.StatusBadRequest {
		t.Fatal(status)
	}
	array := "[" + trackEvent("a1", "u") + "," + trackEvent("a2", "u") + `,{"type":"nope"}]`
	if status, _ := s.post(t, "/webhook", "", array); status != http.StatusBadRequest {
		t.Fatal(status)
	}

	m := scrape(t, s.url+"/metrics")
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"segment_sink_events_accepted_total", []string{"type", "track"}, 5},
		{"segment_sink_events_accepted_total", []string{"type", "identify"}, 1},
		{"segment_sink_events_accepted_total", []string{"type", "page"}, 0},
		{"segment_sink_duplicates_absorbed_total", nil, 2},
		{"segment_sink_events_rejected_total", []string{"reason", "invalid"}, 4},
		{"segment_sink_http_requests_total", []string{"path", "/webhook", "status", "200"}, 6},
		{"segment_sink_http_requests_total", []string{"path", "/webhook", "status", "400"}, 2},
		{"segment_sink_ack_latency_seconds", []string{"path", "/webhook", "outcome", "ok"}, 6},
		{"segment_sink_ack_latency_seconds", []string{"path", "/webhook", "outcome", "error"}, 2},
		{"segment_sink_pending_events", nil, 0},
		{"segment_sink_database_errors_total", nil, -1}, // no error yet: no series
	}
	for _, c := range checks {
		if got := value(m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Every committed event went through exactly one flush.
	if got := histogramSum(m, "segment_sink_flush_events"); got != 6 {
		t.Errorf("events flushed = %v, want 6", got)
	}
	if got := value(m, "segment_sink_flush_duration_seconds"); got < 1 {
		t.Errorf("flush durations observed: %v", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "go_gc_duration_seconds"} {
		if _, ok := m[name]; !ok {
			t.Errorf("runtime metric %s missing", name)
		}
	}
}

func TestMetricsOnTheirOwnAddress(t *testing.T) {
	t.Parallel()
	addr := freePort(t)
	s := startSink(t, map[string]string{"METRICS_ADDR": addr})
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the public address = %d, want 404", resp.StatusCode)
	}
	if m := scrape(t, "http://"+addr+"/metrics"); value(m, "segment_sink_pending_events") != 0 {
		t.Errorf("metrics on METRICS_ADDR lack the sink's gauges")
	}
}

func TestHealthcheckCommand(t *testing.T) {
	t.Parallel()
	s := startSink(t, nil)
	addr := strings.TrimPrefix(s.url, "http://")
	var out strings.Builder
	if err := run(t.Context(), []string{"healthcheck", "--listen-addr", addr}, func(string) string { return "" }, &out, io.Discard); err != nil || out.String() != "ok\n" {
		t.Errorf("healthcheck of a running sink = %v %q", err, out.String())
	}
	if err := run(t.Context(), []string{"healthcheck", "--listen-addr", freePort(t)}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Error("healthcheck with nothing listening succeeded")
	}
}

// There is no Docker engine where these tests run, so the image and the stack are checked for
// the properties operators rely on rather than built.
func TestComposeFileWiresPostgresAndTheSink(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string `yaml:"image"`
			Build       struct{ Context, Dockerfile string }
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Ports       []string          `yaml:"ports"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
			DependsOn map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	pg, sink := compose.Services["postgres"], compose.Services["sink"]
	if !strings.HasPrefix(pg.Image, "postgres:") || len(pg.Volumes) == 0 || len(pg.Healthcheck.Test) == 0 {
		t.Errorf("postgres service needs an image, a volume and a healthcheck: %+v", pg)
	}
	if _, ok := compose.Volumes[strings.SplitN(pg.Volumes[0], ":", 2)[0]]; !ok {
		t.Errorf("postgres volume %q is not declared", pg.Volumes[0])
	}
	if _, err := os.Stat("../../" + sink.Build.Dockerfile); err != nil || sink.Build.Context != "." {
		t.Errorf("sink must build from the repository root with an existing Dockerfile: %+v (%v)", sink.Build, err)
	}
	if dep := sink.DependsOn["postgres"]; dep.Condition != "service_healthy" {
		t.Errorf("sink must wait for a healthy postgres, depends_on = %+v", sink.DependsOn)
	}
	url := sink.Environment["DATABASE_URL"]
	if !strings.Contains(url, "@postgres:5432/"+pg.Environment["POSTGRES_DB"]) ||
		!strings.Contains(url, pg.Environment["POSTGRES_USER"]+":"+pg.Environment["POSTGRES_PASSWORD"]+"@") {
		t.Errorf("sink DATABASE_URL %q does not match the postgres service %v", url, pg.Environment)
	}
}

func TestDockerfileBuildsASmallNonRootImage(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(raw)
	for _, want := range []string{"AS build", "CGO_ENABLED=0", "FROM gcr.io/distroless/static", "USER nonroot", "HEALTHCHECK", `"healthcheck"`, "EXPOSE 8080"} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Count(d, "FROM ") < 2 {
		t.Error("Dockerfile is not multi-stage")
	}
}
