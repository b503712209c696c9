package bench

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4/redis"
	redsyncgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	redsyncrueidis "github.com/go-redsync/redsync/v4/redis/rueidis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidiscompat"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// quorumPeer is a quorum lock under comparison: this library's NewQuorum
// and redsync (Redlock) over three independent redis-servers; rueidislock
// with KeyMajority 2 (three keys, two of which must be taken) over a local
// cluster of three masters.
type quorumPeer struct {
	name    string
	cluster bool // on the cluster, not the three servers
	connect func(addrs []string) (*lib, error)
}

var quorumPeers = []quorumPeer{
	{"redislock-quorum", false, newRedislockQuorum},
	{"redsync-goredis", false, func(addrs []string) (*lib, error) {
		var pools []redis.Pool
		var clients []*goredis.Client
		for _, addr := range addrs {
			client := goredis.NewClient(&goredis.Options{Addr: addr})
			clients = append(clients, client)
			pools = append(pools, redsyncgoredis.NewPool(client))
		}
		return newRedsync("redsync-goredis", func() {
			for _, c := range clients {
				_ = c.Close()
			}
		}, pools...), nil
	}},
	{"redsync-rueidis", false, func(addrs []string) (*lib, error) {
		clients, err := rueidisClients(addrs)
		if err != nil {
			return nil, err
		}
		var pools []redis.Pool
		for _, c := range clients {
			pools = append(pools, redsyncrueidis.NewPool(rueidiscompat.NewAdapter(c)))
		}
		return newRedsync("redsync-rueidis", func() { closeClients(clients) }, pools...), nil
	}},
	{"rueidislock-km2", true, func(addrs []string) (*lib, error) {
		return newRueidislock(addrs[0], "rueidislock-km2", 2, false)
	}},
}

func rueidisClients(addrs []string) ([]rueidis.Client, error) {
	var clients []rueidis.Client
	for _, addr := range addrs {
		c, err := newRueidisClient(addr)
		if err != nil {
			closeClients(clients)
			return nil, err
		}
		clients = append(clients, c)
	}
	return clients, nil
}

func closeClients(clients []rueidis.Client) {
	for _, c := range clients {
		c.Close()
	}
}

// newRedislockQuorum makes this library's quorum Client over addrs; its
// wait retries with a 100ms LinearBackoff, as lib=redislock of
// BenchmarkContendedHandoff (its Release wakes its Client's waiters; a
// split between contenders retries within 5ms).
func newRedislockQuorum(addrs []string) (*lib, error) {
	clients, err := rueidisClients(addrs)
	if err != nil {
		return nil, err
	}
	locker := redislock.NewQuorum(clients)
	return redislockLib("redislock-quorum", locker, 100*time.Millisecond, func() { closeClients(clients) }), nil
}

// BenchmarkQuorum compares the quorum locks (quorumPeers) on servers of its
// own: serial and parallel Obtain+Release (as BenchmarkObtainRelease and
// BenchmarkObtainReleaseParallel), and the contended handoff of
// BenchmarkContendedHandoff (8 goroutines, one key, a 200µs pause after
// each release) with one shared client and with 8 clients. cmds/acq counts
// the commands of every server of the quorum (or master of the cluster).
func BenchmarkQuorum(b *testing.B) {
	redistest.Require(b)
	var servers []*redistest.Server
	var addrs []string
	for range 3 {
		srv := redistest.StartServer(b)
		servers = append(servers, srv)
		addrs = append(addrs, srv.Addr)
	}
	cluster := redistest.StartCluster(b, 3, 0)
	for _, p := range quorumPeers {
		on, at := servers, addrs
		if p.cluster {
			on, at = cluster.Nodes, cluster.Addrs[:1]
		}
		connect := func() (*lib, error) { return p.connect(at) }
		newCounter := serversCounter(on)
		one := connectEach(b, p.name, connect, 1)
		l := one[0]
		b.Run("scenario=serial/"+l.String(), func(b *testing.B) { serialRun(b, l, newCounter) })
		b.Run("scenario=parallel/"+l.String(), func(b *testing.B) { parallelRun(b, l, newCounter) })
		b.Run("scenario=contended-shared/"+l.String(), func(b *testing.B) {
			handoffRun(b, newCounter, shape{"quorum-shared", contenders, 1}, p.name, one)
		})
		closeAll(one)
		var eight []*lib // made on the first run, kept for the larger ones
		b.Run("scenario=contended-clients8/"+l.String(), func(b *testing.B) {
			if eight == nil {
				eight = connectEach(b, p.name, connect, contenders)
			}
			handoffRun(b, newCounter, shape{"quorum-clients8", contenders, contenders}, p.name, eight)
		})
		closeAll(eight)
	}
}

// serversCounter counts the commands that servers executed (INFO
// commandstats, INFO itself left out).
func serversCounter(servers []*redistest.Server) func(testing.TB) counter {
	commands := func(tb testing.TB) int64 {
		var n int64
		for _, s := range servers {
			info, err := s.Do(tb, "INFO", "commandstats")
			if err != nil {
				tb.Fatal(err)
			}
			calls, err := redistest.CommandCalls(info)
			if err != nil {
				tb.Fatal(err)
			}
			n += calls
		}
		return n
	}
	cpu := func(tb testing.TB) time.Duration {
		var d time.Duration
		for _, s := range servers {
			info, err := s.Do(tb, "INFO", "cpu")
			if err != nil {
				tb.Fatal(err)
			}
			d += serverCPU(tb, info)
		}
		return d
	}
	return func(tb testing.TB) counter {
		return counter{commands: commands, before: commands(tb), cpu: cpu, cpuBefore: cpu(tb), selfBefore: selfCPU()}
	}
}

// serverCPU is the CPU time a server has used (used_cpu_sys and
// used_cpu_user of INFO cpu).
func serverCPU(tb testing.TB, info string) time.Duration {
	var d time.Duration
	for line := range strings.SplitSeq(info, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "used_cpu_sys" && name != "used_cpu_user") {
			continue
		}
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil {
			tb.Fatalf("INFO cpu: %s: %v", line, err)
		}
		d += time.Duration(sec * float64(time.Second))
	}
	return d
}
