package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	for _, tc := range []struct {
		sorted  []time.Duration
		p       int
		want    time.Duration
		comment string
	}{
		{ms(7), 50, 7 * time.Millisecond, "one sample (-benchtime=1x)"},
		{ms(7), 99, 7 * time.Millisecond, "one sample"},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond, "even count"},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond, "ten samples"},
		{ms(1, 2, 3), 0, 1 * time.Millisecond, "p0 is the least"},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: percentile(%v, %d) = %v, want %v", tc.comment, tc.sorted, tc.p, got, tc.want)
		}
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_set:calls=3,usec=5,usec_per_call=1.67,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n"
	got, err := redistest.ParseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	if got["set"] != 3 || got["client|setinfo"] != 2 || len(got) != 2 {
		t.Errorf("ParseCommandStats = %v", got)
	}
}

// TestLibs checks that every adapter is a lock: a held key cannot be taken,
// a released one can, a refresh keeps it, a multi-key lock is all or
// nothing, and a waiter gets the key once its holder lets go. A benchmark
// of a broken adapter would measure nothing.
func TestLibs(t *testing.T) {
	e := setup(t)
	for _, l := range e.libs {
		t.Run(l.String(), func(t *testing.T) {
			ctx := context.Background()
			keys := keyRing("test", l, 6)

			h, err := l.obtain(ctx, keys[0])
			if err != nil {
				t.Fatalf("obtain: %v", err)
			}
			if _, err := l.obtain(ctx, keys[0]); !errors.Is(err, errBusy) {
				t.Fatalf("obtain of a held key: %v, want errBusy", err)
			}
			if err := h.Refresh(ctx); l.refresh && err != nil {
				t.Errorf("refresh: %v", err)
			} else if !l.refresh && !errors.Is(err, errUnsupported) {
				t.Errorf("refresh: %v, want errUnsupported", err)
			}
			if err := h.Release(ctx); err != nil {
				t.Fatalf("release: %v", err)
			}
			h, err = l.obtain(ctx, keys[0])
			if err != nil {
				t.Fatalf("obtain after release: %v", err)
			}
			if err := h.Release(ctx); err != nil {
				t.Fatalf("release: %v", err)
			}

			if l.multi != nil {
				m, err := l.multi(ctx, keys[1:4])
				if err != nil {
					t.Fatalf("multi: %v", err)
				}
				if _, err := l.obtain(ctx, keys[2]); !errors.Is(err, errBusy) {
					t.Errorf("obtain of a key of a multi lock: %v, want errBusy", err)
				}
				if _, err := l.multi(ctx, keys[3:6]); !errors.Is(err, errBusy) {
					t.Errorf("multi over a held key: %v, want errBusy", err)
				}
				h, err := l.obtain(ctx, keys[5]) // not taken by the failed multi
				if err != nil {
					t.Errorf("obtain of a key a failed multi left alone: %v", err)
				} else if err := h.Release(ctx); err != nil {
					t.Errorf("release: %v", err)
				}
				if err := m.Release(ctx); err != nil {
					t.Fatalf("release multi: %v", err)
				}
			}

			// A waiter gets the key once its holder releases it.
			h, err = l.obtain(ctx, keys[0])
			if err != nil {
				t.Fatalf("obtain: %v", err)
			}
			got := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				w, err := l.wait(ctx, keys[0])
				if err == nil {
					err = w.Release(context.Background())
				}
				got <- err
			}()
			select {
			case err := <-got:
				t.Fatalf("the waiter returned while the key was held: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if err := h.Release(ctx); err != nil {
				t.Fatalf("release: %v", err)
			}
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("waiter: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the waiter did not get the key within 5s of its release")
			}
		})
	}
}

// TestCommandsPerAcquisition counts, with MONITOR, the commands each library
// sends per Obtain+Release and those its scripts run, and checks them
// against INFO commandstats, which counts both: that is what the cmds/acq
// metric of the benchmarks is. This library and the floor send two
// commands: SET NX PX, then EVALSHA.
func TestCommandsPerAcquisition(t *testing.T) {
	e := setup(t)
	const cycles = 20
	var table strings.Builder
	fmt.Fprintf(&table, "%-16s %5s %10s %8s  %s\n", "lib", "sent", "in scripts", "cmds/acq", "per acquisition")
	for _, l := range e.libs {
		ctx := context.Background()
		keys := keyRing("count", l, cycles+1)
		cycle := func(key string) {
			h, err := l.obtain(ctx, key)
			if err != nil {
				t.Fatalf("%s: obtain: %v", l.name, err)
			}
			if err := h.Release(ctx); err != nil {
				t.Fatalf("%s: release: %v", l.name, err)
			}
		}
		cycle(keys[cycles]) // loads the scripts

		mon := startMonitor(t, e.srv.Addr)
		before := e.commands(t, "echo")
		for _, key := range keys[:cycles] {
			cycle(key)
		}
		after := e.commands(t, "echo")
		sent, inScripts := mon.until(t, e)

		nSent, nScripts := sum(sent), sum(inScripts)
		if got := after - before; got != int64(nSent+nScripts) {
			t.Errorf("%s: INFO commandstats counted %d commands, MONITOR %d sent + %d in scripts",
				l.name, got, nSent, nScripts)
		}
		fmt.Fprintf(&table, "%-16s %5.2f %10.2f %8.2f  sent %s; in scripts %s\n", l.name,
			float64(nSent)/cycles, float64(nScripts)/cycles, float64(after-before)/cycles,
			perCycle(sent, cycles), perCycle(inScripts, cycles))
		if l.name == "redislock" || l.name == "floor" {
			if want := map[string]int{"set": cycles, "evalsha": cycles}; !maps.Equal(sent, want) {
				t.Errorf("%s sent %v in %d cycles, want %v", l.name, sent, cycles, want)
			}
		}
	}
	t.Logf("commands per Obtain+Release, %d cycles:\n%s", cycles, table.String())
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func perCycle(m map[string]int, cycles int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %.2g", strings.ToUpper(k), float64(v)/float64(cycles)))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// monitor reads the MONITOR stream of a server.
type monitor struct {
	conn net.Conn
	r    *bufio.Reader
}

func startMonitor(t *testing.T, addr string) *monitor {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	m := &monitor{conn: conn, r: bufio.NewReader(conn)}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := m.r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("MONITOR: %q %v", line, err)
	}
	return m
}

// until sends an ECHO marker through the admin client and counts, by command
// name in lower case, the commands the stream shows before it: sent by
// clients, and run by scripts (shown as from "lua").
func (m *monitor) until(t *testing.T, e *env) (sent, inScripts map[string]int) {
	t.Helper()
	marker := fmt.Sprintf("bench-marker-%d", time.Now().UnixNano())
	if err := e.admin.Do(context.Background(), e.admin.B().Echo().Message(marker).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	sent, inScripts = map[string]int{}, map[string]int{}
	for {
		line, err := m.r.ReadString('\n')
		if err != nil {
			t.Fatalf("MONITOR: %v", err)
		}
		if strings.Contains(line, marker) {
			return sent, inScripts
		}
		// +1700000000.123456 [0 127.0.0.1:50000] "SET" "key" ...
		start, end := strings.IndexByte(line, '['), strings.Index(line, "] \"")
		if start < 0 || end < start {
			t.Fatalf("MONITOR: unexpected line %q", line)
		}
		src := line[start+1 : end]
		name, _, _ := strings.Cut(line[end+3:], "\"")
		name = strings.ToLower(name)
		switch {
		case name == "info": // the admin client's, around the cycles
		case strings.HasSuffix(src, " lua"):
			inScripts[name]++
		default:
			sent[name]++
		}
	}
}
