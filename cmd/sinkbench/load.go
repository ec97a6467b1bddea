package main

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
)

// request is one HTTP request of a load, with the messageIds it carries.
type request struct {
	body   []byte
	ids    []string
	header http.Header
}

// load is a closed-loop load: conns workers, each on its own keep-alive connection, sending
// its next request as soon as the previous one is answered, for duration.
type load struct {
	url      string
	conns    int
	duration time.Duration
	// make builds worker w's next new request.
	make func(w int) request
	// redeliver is the share of requests that resend an earlier acknowledged one, as Segment
	// does after a lost answer.
	redeliver float64
}

type loadStats struct {
	requests, events, errors, refused int64
	latencies                         []time.Duration
	acked                             map[string]bool
	elapsed                           time.Duration
	cpu                               cpuUse
}

func (l load) run(ctx context.Context) *loadStats {
	transport := &http.Transport{MaxIdleConnsPerHost: l.conns, MaxConnsPerHost: l.conns, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, l.duration)
	defer cancel()

	var mu sync.Mutex
	total := &loadStats{acked: map[string]bool{}}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range l.conns {
		wg.Go(func() {
			var own loadStats
			var done []request
			acked := map[string]bool{}
			for ctx.Err() == nil {
				var r request
				if len(done) > 0 && rand.Float64() < l.redeliver {
					r = done[rand.IntN(len(done))]
				} else {
					r = l.make(w)
				}
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(r.body))
				req.Header = r.header.Clone()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						own.errors++
					}
					continue
				}
				var answer []byte
				if resp.StatusCode == http.StatusServiceUnavailable {
					answer, _ = io.ReadAll(resp.Body)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				own.latencies = append(own.latencies, time.Since(t0))
				own.requests++
				if bytes.Contains(answer, []byte("too many events waiting")) {
					// The sink refusing what its memory budget cannot hold; any other 503 (the
					// database did not commit in time) is an error.
					own.refused++
					continue
				}
				if resp.StatusCode/100 != 2 {
					own.errors++
					continue
				}
				own.events += int64(len(r.ids))
				for _, id := range r.ids {
					acked[id] = true
				}
				if len(done) < 2000 {
					done = append(done, r)
				}
			}
			mu.Lock()
			total.requests += own.requests
			total.events += own.events
			total.errors += own.errors
			total.refused += own.refused
			total.latencies = append(total.latencies, own.latencies...)
			for id := range acked {
				total.acked[id] = true
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	return total
}

// result turns the load's stats into a scenario result.
func (s *loadStats) result() result {
	slices.Sort(s.latencies)
	pct := func(p float64) float64 {
		if len(s.latencies) == 0 {
			return 0
		}
		return float64(s.latencies[int(p*float64(len(s.latencies)-1))]) / 1e6
	}
	return result{
		Events: s.events, Requests: s.requests, Errors: s.errors, Refused: s.refused,
		EventsPerSec: float64(s.events) / s.elapsed.Seconds(),
		P50Ms:        pct(0.50), P99Ms: pct(0.99), MaxMs: pct(1),
		CPUMicrosPerEvent: s.cpu,
	}
}
