package redistest_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// recorder is a testing.TB whose Skip and Fatal are recorded.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()           {}
func (r *recorder) Skip(args ...any)  { r.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) Fatal(args ...any) { r.failed = fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}

func TestRequire(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	require.False(t, redistest.Available())

	t.Setenv("REDISLOCK_REQUIRE_REDIS", "")
	r := &recorder{TB: t}
	r.run(redistest.Require)
	assert.Contains(t, r.skipped, "apt-get install -y redis-server")
	assert.Empty(t, r.failed)

	t.Setenv("REDISLOCK_REQUIRE_REDIS", "1")
	r = &recorder{TB: t}
	r.run(redistest.Require)
	assert.Contains(t, r.failed, "apt-get install -y redis-server")
	assert.Empty(t, r.skipped)
}

func TestServer_Client(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t, "--enable-debug-command", "local")
	assert.Equal(t, fmt.Sprintf("127.0.0.1:%d", srv.Port), srv.Addr)
	assert.DirExists(t, srv.Dir)
	assert.Positive(t, srv.Pid())

	client := srv.Client(t)
	require.NoError(t, client.Do(t.Context(), client.B().Set().Key("k").Value("v").Build()).Error())
	got, err := client.Do(t.Context(), client.B().Get().Key("k").Build()).ToString()
	require.NoError(t, err)
	assert.Equal(t, "v", got)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"GET", "k"}, "v"},
		{[]string{"GET", "missing"}, ""},
		{[]string{"INCR", "n"}, "1"},
		{[]string{"RPUSH", "list", "a", "b c"}, "2"},
		{[]string{"LRANGE", "list", "0", "-1"}, "a\nb c"},
		{[]string{"CONFIG", "GET", "enable-debug-command"}, "enable-debug-command\nlocal"},
		{[]string{"CONFIG", "GET", "appendonly"}, "appendonly\nno"},
		{[]string{"DEBUG", "SLEEP", "0"}, "OK"},
	} {
		got, err := srv.Do(t, tc.args...)
		require.NoError(t, err, tc.args)
		assert.Equal(t, tc.want, got, tc.args)
	}
	_, err = srv.Do(t, "NOSUCHCOMMAND")
	require.ErrorContains(t, err, "ERR unknown command")
}

func TestServer_Restart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string // the key after a crash and restart
	}{
		{"no persistence", nil, ""},
		{"aof always", []string{"--appendonly", "yes", "--appendfsync", "always"}, "v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.StartServer(t, tc.args...)
			client := srv.Client(t)
			require.NoError(t, client.Do(t.Context(), client.B().Set().Key("k").Value("v").Build()).Error())
			addr, pid := srv.Addr, srv.Pid()

			srv.Stop(t)
			assert.Zero(t, srv.Pid())
			_, err := srv.Do(t, "PING")
			require.Error(t, err, "a stopped server answered")

			srv.Restart(t)
			assert.Equal(t, addr, srv.Addr)
			assert.NotEqual(t, pid, srv.Pid())
			require.Eventually(t, func() bool { // the client reconnects by itself
				got, err := client.Do(t.Context(), client.B().Get().Key("k").Build()).ToString()
				if tc.want == "" {
					return rueidis.IsRedisNil(err)
				}
				return err == nil && got == tc.want
			}, 5*time.Second, 20*time.Millisecond)
		})
	}
}

func TestStartServerConfig(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServerConfig(t, redistest.Config{
		File:     "user default off\nuser admin on >admin-pw ~* &* +@all\n",
		TLS:      true,
		Username: "admin",
		Password: "admin-pw",
	}, "--enable-debug-command", "local")
	require.NotNil(t, srv.TLSConfig())
	for _, args := range [][]string{
		{"CONFIG", "GET", "port"},
		{"CONFIG", "GET", "enable-debug-command"},
		{"ACL", "WHOAMI"},
	} {
		got, err := srv.Do(t, args...)
		require.NoError(t, err, args)
		assert.Equal(t, map[string]string{
			"port":                 "port\n0",
			"enable-debug-command": "enable-debug-command\nlocal",
			"WHOAMI":               "admin",
		}[args[len(args)-1]], got, args)
	}

	client := srv.Client(t, func(o *rueidis.ClientOption) { o.Username, o.Password = "admin", "admin-pw" })
	require.NoError(t, client.Do(t.Context(), client.B().Set().Key("k").Value("v").Build()).Error())
	_, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, TLSConfig: srv.TLSConfig()})
	require.Error(t, err, "the default user is off")

	srv.Restart(t)
	got, err := srv.Do(t, "PING")
	require.NoError(t, err)
	assert.Equal(t, "PONG", got)
	assert.Nil(t, redistest.StartServer(t).TLSConfig())
}

func TestServer_Pause(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	get := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		return client.Do(ctx, client.B().Get().Key("k").Build()).NonRedisError()
	}
	require.NoError(t, get(5*time.Second))

	srv.Pause(t)
	start := time.Now()
	require.ErrorIs(t, get(200*time.Millisecond), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)

	srv.Resume(t)
	require.Eventually(t, func() bool { return get(time.Second) == nil }, 10*time.Second, 20*time.Millisecond)
}

func TestServer_cleanup(t *testing.T) {
	t.Parallel()
	var pid int
	t.Run("left paused", func(t *testing.T) {
		srv := redistest.StartServer(t)
		pid = srv.Pid()
		srv.Pause(t)
	})
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "redis-server outlived its test")
}

func TestCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3, 0)
	require.Len(t, cl.Addrs, 3)
	require.Len(t, cl.Nodes, 3)
	client := cl.Client(t)

	// "b", "c" and "a" hash to slots 3300, 7365 and 15495: one on each master.
	slots := map[string]bool{}
	for _, key := range []string{"a", "b", "c"} {
		slot, err := cl.Nodes[0].Do(t, "CLUSTER", "KEYSLOT", key)
		require.NoError(t, err)
		slots[slot] = true

		require.NoError(t, client.Do(t.Context(), client.B().Set().Key(key).Value("v-"+key).Build()).Error())
		got, err := client.Do(t.Context(), client.B().Get().Key(key).Build()).ToString()
		require.NoError(t, err)
		assert.Equal(t, "v-"+key, got)

		owners := 0
		for _, n := range cl.Nodes {
			got, err := n.Do(t, "GET", key)
			if err != nil {
				require.ErrorContains(t, err, "MOVED")
				continue
			}
			assert.Equal(t, "v-"+key, got)
			owners++
		}
		assert.Equal(t, 1, owners, key)
	}
	assert.Len(t, slots, 3)
}

func TestCluster_replicas(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3, 1)
	require.Len(t, cl.Nodes, 6)
	for i, n := range cl.Nodes {
		assert.Equal(t, cl.Addrs[i], n.Addr)
		role, err := n.Do(t, "ROLE")
		require.NoError(t, err)
		want := "master"
		if i >= 3 {
			want = "slave"
		}
		assert.True(t, strings.HasPrefix(role, want+"\n"), "node %d: %q", i, role)
	}
	client := cl.Client(t)
	require.NoError(t, client.Do(t.Context(), client.B().Set().Key("k").Value("v").Build()).Error())
}

// A sentinel deployment starts ready, names its first server the master,
// and follows a SENTINEL FAILOVER to a replica.
func TestStartSentinel(t *testing.T) {
	redistest.Require(t)
	d := redistest.StartSentinel(t, 2, 3)
	if len(d.Servers) != 3 || len(d.Sentinels) != 3 {
		t.Fatalf("%d servers, %d sentinels", len(d.Servers), len(d.Sentinels))
	}
	if m := d.Master(t); m != d.Servers[0] {
		t.Fatalf("master %s, want %s", m.Addr, d.Servers[0].Addr)
	}
	if _, err := d.Sentinels[0].Do(t, "SENTINEL", "FAILOVER", redistest.MasterName); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for d.Master(t) == d.Servers[0] {
		if time.Now().After(deadline) {
			t.Fatal("no failover within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	info, err := d.Master(t).Do(t, "INFO", "replication")
	require.NoError(t, err)
	assert.Contains(t, info, "role:master", "the new master says so")
}
