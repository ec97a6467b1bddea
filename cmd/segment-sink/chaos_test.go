package main

// Delivery guarantees, proven by breaking things on purpose: concurrent clients that retry
// non-2xx answers as Segment does, a record of every messageId that got a 2xx, something broken
// mid-load, and then a check of the database.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/segment-sink/segment-sink/internal/dbtest"
)

// childEnv marks a copy of this test binary that runs the sink instead of the tests, so that a
// test can kill -9 a real sink process.
const childEnv = "SEGMENT_SINK_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is the sink running in its own process.
type child struct {
	cmd  *exec.Cmd
	url  string
	logs *lockedBuffer
	done chan error
}

func startChild(t *testing.T, vars map[string]string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1", "LOG_FORMAT=text")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	c := &child{cmd: cmd, logs: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = c.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "segment-sink listening on "); ok {
				listening <- addr
			}
		}
		c.done <- cmd.Wait()
	}()
	select {
	case c.url = <-listening:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("child sink did not start:\n%s", c.logs)
	}
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("child sink logs:\n%s", c.logs)
		}
	})
	return c
}

func (c *child) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not exit after %v", sig)
	}
}

// peakRSS is the child's high-water mark of resident memory, in bytes.
func (c *child) peakRSS(t *testing.T) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read peak RSS: %v", err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// loadConfig describes a load: Workers clients, each sending its own Events ids in turn to
// every target at once, retrying every non-2xx answer until it gets a 2xx or Deadline passes.
type loadConfig struct {
	Workers, Events int
	Targets         func() []string // read before each attempt, so that targets can change
	Prefix          string
	Shared          bool // all workers send the same ids (replicas, redeliveries)
	Deadline        time.Duration
}

// loadResult is what the clients saw.
type loadResult struct {
	mu          sync.Mutex
	acked       map[string]bool
	sent        map[string]bool
	statuses    map[int]int // HTTP status -> count; 0 counts connection errors
	slowestFail time.Duration
	nAcked      atomic.Int64
}

func (r *loadResult) record(id string, status int, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses[status]++
	if status >= 200 && status < 300 {
		if !r.acked[id] {
			r.nAcked.Add(1)
		}
		r.acked[id] = true
	} else if status != 0 {
		r.slowestFail = max(r.slowestFail, took)
	}
}

// answers503 counts the 503 answers, and every answer that was neither 200 nor 503 (connection
// errors included, as status 0).
func (r *loadResult) answers503() (n503, other int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for status, n := range r.statuses {
		switch status {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			n503 += n
		default:
			other += n
		}
	}
	return n503, other
}

func (r *loadResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("sent %d ids, acknowledged %d, answers by status %v, slowest non-2xx answer %s",
		len(r.sent), len(r.acked), r.statuses, r.slowestFail.Round(time.Millisecond))
}

// runLoad starts the load and returns at once; wait on the channel for it to finish, or call
// stop to end it early.
func runLoad(cfg loadConfig) (res *loadResult, done <-chan struct{}, stop func()) {
	res = &loadResult{acked: map[string]bool{}, sent: map[string]bool{}, statuses: map[int]int{}}
	client := &http.Client{Timeout: 6 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
	finished := make(chan struct{})
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Go(func() {
			for i := range cfg.Events {
				id := fmt.Sprintf("%s-w%d-%d", cfg.Prefix, w, i)
				if cfg.Shared {
					id = fmt.Sprintf("%s-%d", cfg.Prefix, i)
				}
				res.mu.Lock()
				res.sent[id] = true
				res.mu.Unlock()
				body := trackEvent(id, fmt.Sprint("user-", w))
				var targets sync.WaitGroup
				for _, target := range cfg.Targets() {
					targets.Go(func() { deliver(ctx, client, target, id, body, res) })
				}
				targets.Wait()
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	go func() { wg.Wait(); cancel(); close(finished) }()
	return res, finished, cancel
}

// deliver posts one event until it is acknowledged, backing off between attempts as Segment
// does (much faster here, to keep the tests short).
func deliver(ctx context.Context, client *http.Client, target, id, body string, res *loadResult) {
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target+"/webhook", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		status := 0
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		} else if ctx.Err() != nil {
			return
		}
		res.record(id, status, time.Since(start))
		if status >= 200 && status < 300 {
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// waitAcked waits until n events are acknowledged.
func waitAcked(t *testing.T, res *loadResult, n int64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); res.nAcked.Load() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("load stalled: %s", res)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkExactlyOnce asserts that every acknowledged id, and after the retries every sent id,
// is in tracks exactly once, and that tracks holds nothing else.
func checkExactlyOnce(t *testing.T, dbURL string, res *loadResult) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Across every event table: the primary key keeps a table from doubling a row, so a
	// duplicate could only be the same message in two tables.
	rows, err := conn.Query(context.Background(), `SELECT message_id, count(*) FROM (
		SELECT message_id FROM tracks UNION ALL SELECT message_id FROM identifies UNION ALL SELECT message_id FROM pages
		UNION ALL SELECT message_id FROM screens UNION ALL SELECT message_id FROM groups UNION ALL SELECT message_id FROM aliases) m
		GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct {
		id string
		n  int
	}, error) {
		var v struct {
			id string
			n  int
		}
		return v, r.Scan(&v.id, &v.n)
	})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	duplicated := 0
	for _, s := range stored {
		count[s.id] = s.n
		if s.n > 1 {
			duplicated++
		}
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	lostAcked, lostSent, unknown := 0, 0, 0
	for id := range res.acked {
		if count[id] != 1 {
			lostAcked++
		}
	}
	for id := range res.sent {
		if count[id] != 1 {
			lostSent++
		}
	}
	for id := range count {
		if !res.sent[id] {
			unknown++
		}
	}
	t.Logf("events sent %d, acknowledged %d, rows %d, lost: %d, duplicated: %d; answers %v",
		len(res.sent), len(res.acked), len(stored), lostSent, duplicated, res.statuses)
	if lostAcked > 0 {
		t.Errorf("%d acknowledged events are missing", lostAcked)
	}
	if lostSent > 0 {
		t.Errorf("%d sent events are missing after the retries", lostSent)
	}
	if duplicated > 0 || unknown > 0 {
		t.Errorf("%d duplicated and %d unexpected rows", duplicated, unknown)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestKill9UnderLoadLosesNothingAcknowledged(t *testing.T) {
	dbURL := dbtest.New(t)
	vars := map[string]string{"DATABASE_URL": dbURL, "LISTEN_ADDR": freePort(t)}
	first := startChild(t, vars)
	target := first.url
	res, done, _ := runLoad(loadConfig{
		Workers: 16, Events: 150, Prefix: "kill", Deadline: 60 * time.Second,
		Targets: func() []string { return []string{target} },
	})
	waitAcked(t, res, 400)
	first.signal(t, syscall.SIGKILL)
	killedAt := res.nAcked.Load()
	time.Sleep(200 * time.Millisecond) // clients see refused connections and keep retrying
	startChild(t, vars)
	<-done
	if killedAt >= int64(16*150) {
		t.Fatalf("the kill came after the load ended (%d acknowledged)", killedAt)
	}
	t.Logf("killed after %d acknowledgements", killedAt)
	checkExactlyOnce(t, dbURL, res)
}

func TestSIGTERMOfTheProcessDrainsAndExitsZero(t *testing.T) {
	dbURL := dbtest.New(t)
	c := startChild(t, map[string]string{"DATABASE_URL": dbURL, "LISTEN_ADDR": "127.0.0.1:0"})
	res, done, stopLoad := runLoad(loadConfig{
		Workers: 16, Events: 400, Prefix: "term", Deadline: 20 * time.Second,
		Targets: func() []string { return []string{c.url} },
	})
	waitAcked(t, res, 300)
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exit error
	select {
	case exit = <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	took := time.Since(start)
	stopLoad() // the clients could only fail to connect from now on
	<-done
	if exit != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", exit)
	}
	// Draining means every request that reached the sink was answered with its commit: no 503
	// (status 0 counts the connections refused once the listener closed, which senders retry).
	res.mu.Lock()
	for status, n := range res.statuses {
		if status != http.StatusOK && status != 0 {
			t.Errorf("%d answers with status %d while draining", n, status)
		}
	}
	res.mu.Unlock()
	if took > 5*time.Second {
		t.Errorf("draining took %s", took)
	}
	// Only what was acknowledged is promised; the rest was never answered 2xx.
	res.mu.Lock()
	res.sent = res.acked
	res.mu.Unlock()
	checkExactlyOnce(t, dbURL, res)
	if !strings.Contains(c.logs.String(), "stopped") {
		t.Errorf("no orderly stop in the logs")
	}
}

// proxy forwards TCP connections to PostgreSQL and can cut them all, as an outage does.
type proxy struct {
	addr, upstream string
	mu             sync.Mutex
	ln             net.Listener
	conns          map[net.Conn]bool
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	p := &proxy{upstream: upstream, conns: map[net.Conn]bool{}}
	p.addr = freePort(t)
	if err := p.listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) listen() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return nil
}

// cut refuses new connections and drops every open one.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := p.listen()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy cannot listen again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// viaProxy points a database URL at the proxy.
func viaProxy(t *testing.T, dbURL string, p *proxy) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.addr
	return u.String()
}

func TestDatabaseOutageAnswers503ThenRecovers(t *testing.T) {
	dbURL := dbtest.New(t)
	u, _ := url.Parse(dbURL)
	p := newProxy(t, u.Host)
	s := startSinkWith(t, map[string]string{
		"DATABASE_URL": viaProxy(t, dbURL, p), "LISTEN_ADDR": "127.0.0.1:0", "LOG_FORMAT": "text", "ACK_TIMEOUT": "2s",
	})
	res, done, _ := runLoad(loadConfig{
		Workers: 16, Events: 200, Prefix: "outage", Deadline: 60 * time.Second,
		Targets: func() []string { return []string{s.url} },
	})
	waitAcked(t, res, 300)
	p.cut()
	time.Sleep(500 * time.Millisecond)
	if status, body := s.get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage = %d %v, want 503", status, body)
	}
	time.Sleep(2 * time.Second)
	p.restore(t)
	<-done
	if status, body := s.get(t, "/readyz"); status != http.StatusOK {
		t.Errorf("/readyz after the outage = %d %v, want 200", status, body)
	}
	n503, other := res.answers503()
	res.mu.Lock()
	slowest := res.slowestFail
	res.mu.Unlock()
	if n503 == 0 {
		t.Errorf("no 503 during the outage: %s", res)
	}
	if other > 0 {
		t.Errorf("answers other than 200 and 503: %s", res)
	}
	if slowest >= 5*time.Second {
		t.Errorf("a 503 took %s, past Segment's 5s timeout", slowest)
	}
	checkExactlyOnce(t, dbURL, res)
}

func TestOverloadWithATinyBufferStaysBoundedAndLosesNothing(t *testing.T) {
	dbURL := dbtest.New(t)
	// A budget of about 16 events (bytes: the event budget may not go under one tracking batch).
	c := startChild(t, map[string]string{
		"DATABASE_URL": dbURL, "LISTEN_ADDR": "127.0.0.1:0", "MAX_BODY_BYTES": "2048",
		"MAX_PENDING_BYTES": strconv.Itoa(16 * len(trackEvent("overload-w00-000", "user-00"))), "FLUSH_WORKERS": "1", "BATCH_MAX_EVENTS": "8",
	})
	res, done, _ := runLoad(loadConfig{
		Workers: 64, Events: 40, Prefix: "overload", Deadline: 60 * time.Second,
		Targets: func() []string { return []string{c.url} },
	})
	<-done
	rss := c.peakRSS(t)
	t.Logf("peak RSS %d MB; %s", rss>>20, res)
	n503, other := res.answers503()
	if n503 == 0 {
		t.Errorf("no 503 with a budget of ~16 events and 64 clients: %s", res)
	}
	if other > 0 {
		t.Errorf("answers other than 200 and 503 (0 = connection error): %s", res)
	}
	if rss > 150<<20 {
		t.Errorf("peak RSS %d MB, want under 150 MB", rss>>20)
	}
	checkExactlyOnce(t, dbURL, res)
}

// An overloaded sink refuses a request from its headers, before it reads, checks or decodes the
// body: doing all that only to refuse took the CPU the flushes needed. A request that would be
// 401 (a bad signature) is therefore 503 while the budget is full.
func TestOverloadIsRefusedBeforeTheBodyIsLookedAt(t *testing.T) {
	const secret = "s3cret"
	s := startSink(t, map[string]string{"SHARED_SECRET": secret, "MAX_BODY_BYTES": "4096", "MAX_PENDING_BYTES": "4096"})
	conn := s.db(t)
	// The flush of the first event waits on a lock, so that the event stays in the budget.
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), "LOCK TABLE tracks IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	first := make(chan int, 1)
	go func() {
		status, _ := s.post(t, "/webhook", secret, trackEvent("held", "u"))
		first <- status
	}()
	watch := s.db(t)
	for deadline := time.Now().Add(5 * time.Second); queryInt(t, watch,
		`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO %tracks%'`) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the first flush never waited on the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}

	big := fmt.Sprintf(`{"type":"track","messageId":"big","userId":"u","event":"E","properties":{"pad":%q}}`, strings.Repeat("x", 3900))
	header := http.Header{"X-Signature": {"0000"}, "Content-Type": {"application/json"}}
	status, body := s.do(t, "/webhook", header, big)
	if status != http.StatusServiceUnavailable {
		t.Errorf("a badly signed request past the budget = %d %v, want 503 before the signature is checked", status, body)
	}
	// With room in the budget, the same request is read, and refused for its signature.
	if status, _ := s.do(t, "/webhook", header, `{"type":"track","messageId":"m","userId":"u","event":"E"}`); status != http.StatusUnauthorized {
		t.Errorf("a small badly signed request = %d, want 401", status)
	}

	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status := <-first; status != http.StatusOK {
		t.Errorf("the held event = %d, want 200 once the lock is gone", status)
	}
}

func TestReplicasWritingTheSameMessagesAtOnce(t *testing.T) {
	dbURL := dbtest.New(t)
	vars := func() map[string]string {
		return map[string]string{"DATABASE_URL": dbURL, "LISTEN_ADDR": "127.0.0.1:0", "LOG_FORMAT": "text"}
	}
	a, b, c := startSinkWith(t, vars()), startSinkWith(t, vars()), startSinkWith(t, vars())
	// Every worker sends the same ids, each to all three replicas at the same moment.
	res, done, _ := runLoad(loadConfig{
		Workers: 6, Events: 150, Prefix: "replica", Shared: true, Deadline: 60 * time.Second,
		Targets: func() []string { return []string{a.url, b.url, c.url} },
	})
	<-done
	res.mu.Lock()
	for status, n := range res.statuses {
		if status != http.StatusOK {
			t.Errorf("%d answers with status %d; replicas must not fail on shared ids", n, status)
		}
	}
	res.mu.Unlock()
	checkExactlyOnce(t, dbURL, res)
}

func TestAPoisonEventDoesNotFailTheOthersFlushedWithIt(t *testing.T) {
	// BATCH_MAX_WAIT gathers every request below into one flush.
	s := startSink(t, map[string]string{"BATCH_MAX_WAIT": "300ms", "FLUSH_WORKERS": "1"})
	conn := s.db(t)
	// Validation keeps out everything the schema cannot store; a constraint of the user's own
	// is how a valid event can still be refused.
	if _, err := conn.Exec(context.Background(), `ALTER TABLE tracks ADD CONSTRAINT no_poison CHECK (properties->>'n' IS DISTINCT FROM 'poison')`); err != nil {
		t.Fatal(err)
	}
	poison := `{"type":"track","messageId":"poison","userId":"u","event":"E","properties":{"n":"poison"}}`
	var wg sync.WaitGroup
	statuses := make([]int, 30)
	for i := range statuses {
		wg.Go(func() { statuses[i], _ = s.post(t, "/webhook", "", trackEvent(fmt.Sprint("good-", i), "u")) })
	}
	var poisonStatus int
	var poisonBody map[string]any
	wg.Go(func() { poisonStatus, poisonBody = s.post(t, "/webhook", "", poison) })
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Errorf("good event %d = %d", i, st)
		}
	}
	if poisonStatus != http.StatusBadRequest {
		t.Errorf("poison event = %d %v, want 400", poisonStatus, poisonBody)
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id LIKE 'good-%'`); got != len(statuses) {
		t.Errorf("good rows = %d, want %d", got, len(statuses))
	}
	if got := queryInt(t, conn, `SELECT count(*) FROM tracks WHERE message_id = 'poison'`); got != 0 {
		t.Errorf("the poison event was stored")
	}
	if !strings.Contains(s.logs.String(), "no_poison") {
		t.Errorf("the log does not say why the poison event was refused")
	}
}
