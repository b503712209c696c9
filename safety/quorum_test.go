package safety_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// Scenario: a quorum of three redis-servers (appendfsync always), each
// behind a proxy, 8 quorum Clients on 4 keys, 3,000 acquisitions, while
// each node in turn fails: killed with kill -9 and restarted from its AOF;
// paused (SIGSTOP) for 300ms, three times its call bound; its replies slowed
// by 200ms for 500ms; or its replies held for 500ms (a partition that
// heals: the node runs every command, and its replies arrive at once when
// it ends). One holder at a time, and fence tokens the fenced resource
// accepts, whichever majority granted them.
func TestQuorumFaults(t *testing.T) {
	// slow delays node i's replies by latency for 500ms, five times the
	// call bound of a 1s TTL (QuorumCallFraction); the replies it holds
	// then go out at once.
	slow := func(latency string) func(t *testing.T, n quorumNode) {
		return func(t *testing.T, n quorumNode) {
			name := n.proxy.toxic("latency", "downstream", `{"latency":`+latency+`}`)
			time.Sleep(500 * time.Millisecond)
			n.proxy.remove(name)
		}
	}
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T, n quorumNode)
	}{
		{"kill -9 and restart", func(t *testing.T, n quorumNode) {
			n.srv.Stop(t)
			n.srv.Restart(t)
		}},
		{"paused 300ms", func(t *testing.T, n quorumNode) {
			n.srv.Pause(t)
			time.Sleep(300 * time.Millisecond)
			n.srv.Resume(t)
		}},
		{"slow replies (200ms latency)", slow("200")},
		// Held, not dropped: toxiproxy's timeout toxic drops the replies,
		// and its removal closes the connection but strands a goroutine
		// of the link (v2.5.0), which the leak check then reports.
		{"partitioned (replies held 500ms)", slow("60000")},
	} {
		t.Run(tc.name, func(t *testing.T) { quorumFault(t, tc.fault) })
	}
}

// nodeFailures is an Observer that counts the calls that saw a node fail.
type nodeFailures struct{ calls atomic.Int64 }

func (o *nodeFailures) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (o *nodeFailures) End(_ context.Context, ev *redislock.Event) {
	if ev.NodesFailed > 0 {
		o.calls.Add(1)
	}
}

// quorumNode is a node of TestQuorumFaults: its server, and the proxy its
// clients reach it through.
type quorumNode struct {
	srv   *safety.Server
	proxy *proxy
}

func quorumFault(t *testing.T, fault func(t *testing.T, n quorumNode)) {
	var servers []quorumNode
	for range 3 {
		srv := safety.StartServer(t, safety.ServerOptions{
			Args: []string{"--appendonly", "yes", "--appendfsync", "always"},
		})
		servers = append(servers, quorumNode{srv: srv, proxy: startProxy(t, srv.Addr)})
	}
	rec := safety.NewRecorder()
	res := safety.NewFencedResource()
	failed := &nodeFailures{}
	cs := make([]*safety.Client, 8)
	for i := range cs {
		var nodes []rueidis.Client
		for _, n := range servers {
			nodes = append(nodes, safety.NewClient(t, n.proxy.Addr()))
		}
		cs[i] = &safety.Client{ID: i, Locker: redislock.NewQuorum(nodes, redislock.WithObserver(failed)), Rec: rec}
	}
	const total = 3000
	kills := make(chan int, 3)
	w := &safety.Workload{
		Clients:      cs,
		Keys:         []string{"a", "b", "c", "d"},
		Acquisitions: total,
		TTL:          time.Second,
		RefreshOneIn: 4,
		Resource:     res,
		OnAcquire: func(n int) {
			if n%(total/4) == 0 && n < total {
				kills <- n/(total/4) - 1
			}
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			select {
			case i := <-kills:
				fault(t, servers[i])
			case <-t.Context().Done():
				return
			}
		}
	}()
	n := w.Run(t.Context())
	<-done
	t.Logf("%d acquisitions; each node failed once; %d calls saw a node fail", n, failed.calls.Load())
	require.Positive(t, failed.calls.Load(), "no call saw the fault")
	ops := rec.Ops()
	t.Logf("history: %v", safety.Summarize(ops))
	overlaps := safety.Overlaps(ops, 5*time.Millisecond)
	rep := res.Check()
	t.Logf("overlaps: %d; fenced resource: %v", overlaps, rep)
	require.Zero(t, overlaps, "two tokens held one key at once")
	require.Empty(t, rep.Violations, "writes rejected while their lock was valid")
	// Required: every call's outcome fits one order of the operations.
	// Histories judged not linearizable were seen only while this harness
	// had two defects, both gone: a quorum error whose node's dial failed
	// was read as "never sent" although another node had applied it; and
	// the partition was toxiproxy's timeout toxic, which drops reply bytes
	// from a live connection that may then carry on, so that a client
	// pairs later replies with the wrong commands (no TCP link does that;
	// the likely cause of the one bad history kept, not reproduced).
	v := safety.Linearizable(ops, safety.CheckOptions{Fence: true})
	t.Logf("porcupine: %v", v)
	require.Equal(t, "linearizable", resultName(v), "porcupine: the history fits no order of the operations")
}
