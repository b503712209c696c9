package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
)

// runBench runs the command with args and returns its exit status, stdout
// and stderr.
func runBench(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRun_usage(t *testing.T) {
	const usage = "usage: redislock bench [flags]"
	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"no args", nil, []string{"usage:", "redislock bench [flags]"}},
		{"-h", []string{"-h"}, []string{"usage:", "redislock bench [flags]"}},
		{"help", []string{"help"}, []string{"usage:"}},
		{"unknown command", []string{"serve"}, []string{`unknown command "serve"`, "usage:"}},
		{"bench -h", []string{"bench", "-h"}, []string{usage, "-addr", "-cluster", "-workers", "-keys", "-duration", "-ttl", "-hold", "-retry", "-fence", "-interval"}},
		{"unknown flag", []string{"bench", "-nope"}, []string{"flag provided but not defined: -nope", usage}},
		{"not a number", []string{"bench", "-workers", "many"}, []string{`invalid value "many" for flag -workers`, usage}},
		{"argument", []string{"bench", "extra"}, []string{`unexpected argument "extra"`, usage}},
		{"workers 0", []string{"bench", "-workers", "0"}, []string{"-workers must be between 1 and 10000, got 0", usage}},
		{"workers too many", []string{"bench", "-workers", "10001"}, []string{"-workers must be between 1 and 10000", usage}},
		{"keys 0", []string{"bench", "-keys", "0"}, []string{"-keys must be between 1 and 1000000, got 0", usage}},
		{"duration 0", []string{"bench", "-duration", "0s"}, []string{"-duration must be positive, got 0s", usage}},
		{"duration negative", []string{"bench", "-duration", "-1s"}, []string{"-duration must be positive, got -1s", usage}},
		{"ttl under 1ms", []string{"bench", "-ttl", "999us"}, []string{"-ttl must be between 1ms and 24h, got 999µs", usage}},
		{"ttl 0", []string{"bench", "-ttl", "0"}, []string{"-ttl must be between 1ms and 24h, got 0s", usage}},
		{"hold negative", []string{"bench", "-hold", "-1ms"}, []string{"-hold must not be negative", usage}},
		{"hold not under ttl", []string{"bench", "-ttl", "10ms", "-hold", "10ms"}, []string{"-hold (10ms) must be shorter than -ttl (10ms)", usage}},
		{"retry 0", []string{"bench", "-retry", "0"}, []string{"-retry must be positive, got 0s", usage}},
		{"interval 0", []string{"bench", "-interval", "0"}, []string{"-interval must be positive, got 0s", usage}},
		{"cluster without addr", []string{"bench", "-cluster"}, []string{"-cluster needs -addr", usage}},
		{"addr without port", []string{"bench", "-addr", "localhost"}, []string{`-addr: "localhost" is not a host:port`, usage}},
		{"addr empty item", []string{"bench", "-cluster", "-addr", "127.0.0.1:7000,"}, []string{`-addr: "" is not a host:port`, usage}},
		{"several addrs without cluster", []string{"bench", "-addr", "127.0.0.1:7000,127.0.0.1:7001"}, []string{"several addresses need -cluster", usage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runBench(t, t.Context(), tc.args...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out, "nothing on stdout")
			for _, want := range tc.want {
				assert.Contains(t, errOut, want)
			}
			assert.NotContains(t, errOut, "goroutine ", "no stack trace")
		})
	}
}
