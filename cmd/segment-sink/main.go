// Command segment-sink receives Segment events over HTTP and lands them, exactly once, in
// PostgreSQL tables, one per event type. Run it with --help for its commands and settings.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultGCPercent replaces Go's default of 100 unless GOGC is set. Measured with `make bench`:
// single-event throughput rose 7-48% across runs (GC work per request falls fourfold) for about
// 12 MB more resident memory. The heap stays bounded under overload by the soft memory limit
// that limitMemory sets.
const defaultGCPercent = 400

// limitMemory sets the Go runtime's soft memory limit for a sink whose events may hold
// pendingBytes, and returns it; 0 when it leaves the limit alone. The events waiting for a commit
// take about twice their budgeted bytes once a flush encodes them, and GOGC=400 alone would let
// the heap grow to five times what is live: under sustained overload with the default budget
// the sink reached 550-890 MB. With the limit it stays near 140 MB and keeps its throughput
// (measured with sinkbench's sink-overload). main sets it; tests, which run several sinks in one
// process, leave it alone.
var limitMemory = func(pendingBytes int64) int64 { return 0 }

// minMemoryLimit keeps a small MAX_PENDING_BYTES from setting a limit under what the sink needs
// at rest, where the garbage collector would run without pause.
const minMemoryLimit = 64 << 20

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		limitMemory = func(pendingBytes int64) int64 {
			limit := max(4*pendingBytes, minMemoryLimit)
			debug.SetMemoryLimit(limit)
			return limit
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "segment-sink:", err)
		os.Exit(1)
	}
}
