package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is Linux's USER_HZ, the unit of /proc/<pid>/stat's CPU times.
const clockTick = 10 * time.Millisecond

// processCPU returns the user+system CPU time a process has used so far.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * clockTick
}

// postgresCPU sums the CPU time of every process named postgres (the server and its backends;
// backends that exit in between are missed, which the benchmark avoids by keeping its pools open).
func postgresCPU() time.Duration {
	entries, _ := os.ReadDir("/proc")
	var total time.Duration
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		total += processCPU(pid)
	}
	return total
}

// selfCPU is the load generator's own CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuUse is the CPU time each party spent during a scenario, in microseconds per event.
type cpuUse struct {
	Server, LoadGenerator, Postgres float64
}

type cpuMark struct {
	server, self, pg time.Duration
	pid              int
}

func markCPU(pid int) cpuMark {
	return cpuMark{server: processCPU(pid), self: selfCPU(), pg: postgresCPU(), pid: pid}
}

func (m cpuMark) since(events int64) cpuUse {
	if events == 0 {
		return cpuUse{}
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(events) }
	return cpuUse{
		Server:        per(processCPU(m.pid) - m.server),
		LoadGenerator: per(selfCPU() - m.self),
		Postgres:      per(postgresCPU() - m.pg),
	}
}
