package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// MasterName is the name under which the sentinels of StartSentinel watch
// their master.
const MasterName = "mymaster"

// Sentinel is a local Sentinel deployment on 127.0.0.1, started by
// StartSentinel: one master, its replicas and the sentinels that watch it.
type Sentinel struct {
	// Servers are the data nodes: the master as started first, then the
	// replicas. After a failover, Master tells which one is the master.
	Servers []*Server
	// Sentinels are the sentinel processes; SentinelAddrs their addresses,
	// the seed of a rueidis Sentinel client.
	Sentinels     []*Server
	SentinelAddrs []string
}

// StartSentinel starts one master, replicas replicas of it and sentinels
// sentinels (redis-server s.conf --sentinel) watching it as MasterName with
// a quorum of a majority, down-after-milliseconds 1000 and failover-timeout
// 5000, every node with repl-diskless-sync-delay 0 (else a promoted replica
// may never have synced). It returns once every replica is in sync and
// every sentinel knows every replica and every other sentinel, within 30 s,
// and fails tb otherwise. Every process is stopped when tb ends.
func StartSentinel(tb testing.TB, replicas, sentinels int) *Sentinel {
	tb.Helper()
	if replicas < 1 || sentinels < 1 {
		tb.Fatalf("redistest: a sentinel deployment needs a replica and a sentinel, not %d and %d", replicas, sentinels)
	}
	d := &Sentinel{}
	master := StartServer(tb, "--repl-diskless-sync-delay", "0")
	d.Servers = append(d.Servers, master)
	for range replicas {
		d.Servers = append(d.Servers, StartServer(tb, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port),
			"--repl-diskless-sync-delay", "0"))
	}
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d\n"+
		"sentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 5000\n", MasterName, master.Port, sentinels/2+1)
	for range sentinels {
		s := startServer(tb, false, Config{File: conf}, []string{"--sentinel"})
		d.Sentinels = append(d.Sentinels, s)
		d.SentinelAddrs = append(d.SentinelAddrs, s.Addr)
	}

	deadline := time.Now().Add(readyTimeout)
	for {
		err := d.ready(replicas, sentinels)
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: sentinel deployment not ready after %v: %v", readyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready tells why the deployment is not ready yet, or nil.
func (d *Sentinel) ready(replicas, sentinels int) error {
	for _, r := range d.Servers[1:] {
		info, err := r.do(time.Second, "INFO", "replication")
		if err != nil {
			return err
		}
		if infoField(info, "master_link_status") != "up" {
			return fmt.Errorf("replica %s: master link not up", r.Addr)
		}
	}
	for _, s := range d.Sentinels {
		info, err := s.do(time.Second, "SENTINEL", "MASTER", MasterName)
		if err != nil {
			return err
		}
		if n := field(info, "num-slaves"); n != strconv.Itoa(replicas) {
			return fmt.Errorf("sentinel %s knows %s replicas", s.Addr, n)
		}
		if n := field(info, "num-other-sentinels"); n != strconv.Itoa(sentinels-1) {
			return fmt.Errorf("sentinel %s knows %s other sentinels", s.Addr, n)
		}
	}
	return nil
}

// field returns the value after name in a reply of alternating names and
// values, one a line (SENTINEL MASTER through Do).
func field(reply, name string) string {
	lines := strings.Split(reply, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		if lines[i] == name {
			return lines[i+1]
		}
	}
	return ""
}

// Master returns the data node the sentinels take for the master now.
func (d *Sentinel) Master(tb testing.TB) *Server {
	tb.Helper()
	for _, s := range d.Sentinels {
		reply, err := s.do(time.Second, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
		if err != nil {
			continue
		}
		addr := strings.Join(strings.Split(reply, "\n"), ":")
		for _, n := range d.Servers {
			if n.Addr == addr {
				return n
			}
		}
	}
	tb.Fatalf("redistest: no sentinel names a master of the deployment")
	return nil
}

// Client returns a rueidis Sentinel client (ClientOption.Sentinel, master
// set MasterName) seeded with the sentinels' addresses, changed by opts,
// and closes it when tb ends.
func (d *Sentinel) Client(tb testing.TB, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	opt := rueidis.ClientOption{
		InitAddress: d.SentinelAddrs,
		Sentinel:    rueidis.SentinelOption{MasterSet: MasterName},
	}
	for _, f := range opts {
		f(&opt)
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("redistest: sentinel client: %v", err)
	}
	tb.Cleanup(client.Close)
	return client
}
