package safety_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// MinimalACL is the ACL rule the library needs, for the README: its keys,
// the commands it sends and those its scripts call. +incr only with a
// FenceKey; +client|tracking only with rueidis' client-side caching (its
// default); +ping for rueidis' keep-alive on an idle connection.
const MinimalACL = "resetchannels ~lock:* -@all +set +get +del +pexpire +pttl +incr " +
	"+eval +evalsha +eval_ro +evalsha_ro +ping +client|tracking"

const (
	lockerPassword = "Pw-9f3c1e-do-not-leak"
	adminPassword  = "Admin-7b2d-do-not-leak"
	secretToken    = "Token-5e8a-do-not-leak"
)

// Scenario 10: the whole API over TLS, as an ACL user limited to the lock
// keys (lock:*) and MinimalACL's commands; scripts flushed in between, so
// that the EVAL fallback is covered too. No error ever shows a token or a
// password.
func TestTLSAndACL(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{
		TLS: true,
		Config: "user default off\n" +
			"user admin on >" + adminPassword + " ~* &* +@all\n" +
			"user locker on >" + lockerPassword + " " + MinimalACL + "\n",
		CLIArgs: []string{"--user", "admin", "--pass", adminPassword},
	})
	var errs []error
	seen := func(err error) error {
		if err != nil {
			errs = append(errs, err)
		}
		return err
	}
	defer func() {
		for _, err := range errs {
			for _, secret := range []string{lockerPassword, adminPassword, secretToken} {
				require.NotContains(t, err.Error(), secret, "an error shows a secret")
			}
		}
		t.Logf("%d errors checked for tokens and passwords, e.g. %v", len(errs), errs)
	}()

	for _, cache := range []bool{true, false} {
		name := "client-side caching"
		if !cache {
			name = "no caching"
		}
		t.Run(name, func(t *testing.T) {
			srv.MustDo(t, "FLUSHALL")
			client := srv.Client(t, func(o *rueidis.ClientOption) {
				o.Username, o.Password, o.DisableCache = "locker", lockerPassword, !cache
			})
			locker := redislock.New(client)
			ctx := t.Context()
			flush := func() { srv.MustDo(t, "SCRIPT", "FLUSH") }

			// Obtain (SET NX PX), TTL, Refresh, Release.
			lock, err := locker.Obtain(ctx, "lock:plain", time.Minute, nil)
			require.NoError(t, err)
			_, err = locker.Obtain(ctx, "lock:plain", time.Minute, nil)
			require.ErrorIs(t, seen(err), redislock.ErrNotObtained)
			flush()
			ttl, err := lock.TTL(ctx)
			require.NoError(t, err)
			require.Positive(t, ttl)
			flush()
			require.NoError(t, lock.Refresh(ctx, time.Minute, nil))
			flush()
			require.NoError(t, lock.Release(ctx))
			require.ErrorIs(t, seen(lock.Release(ctx)), redislock.ErrLockNotHeld)
			require.ErrorIs(t, seen(lock.Refresh(ctx, time.Minute, nil)), redislock.ErrNotObtained)

			// A fenced obtain with a custom token and metadata, taken again
			// with its token; ObtainMulti.
			flush()
			opt := &redislock.Options{Token: secretToken, Metadata: "m", FenceKey: "lock:fence"}
			fenced, err := locker.Obtain(ctx, "lock:fenced", time.Minute, opt)
			require.NoError(t, err)
			again, err := locker.Obtain(ctx, "lock:fenced", time.Minute, opt)
			require.NoError(t, err)
			require.Equal(t, fenced.FenceToken(), again.FenceToken())
			_, err = locker.Obtain(ctx, "lock:fenced", time.Minute, &redislock.Options{Token: secretToken + "x", FenceKey: "lock:fence"})
			require.ErrorIs(t, seen(err), redislock.ErrNotObtained)
			require.NoError(t, fenced.Release(ctx))
			multi, err := locker.ObtainMulti(ctx, []string{"lock:m1", "lock:m2"}, time.Minute, opt)
			require.NoError(t, err)
			require.NoError(t, multi.Refresh(ctx, time.Minute, nil))
			require.NoError(t, multi.Release(ctx))

			// Keys outside the user's pattern: NOPERM, terminal, and no
			// secret in the error.
			_, err = locker.Obtain(ctx, "other:k", time.Minute, opt)
			require.Error(t, seen(err))
			require.Contains(t, err.Error(), "NOPERM")
			require.NotErrorIs(t, err, redislock.ErrNotObtained)
			_, err = locker.Obtain(ctx, "lock:k", time.Minute, &redislock.Options{Token: secretToken, FenceKey: "other:fence"})
			require.Error(t, seen(err))
			require.Contains(t, err.Error(), "NOPERM")

			// Errors of a server that stops answering, of a cancelled ctx.
			srv.Pause(t)
			tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			_, err = locker.Obtain(tctx, "lock:stalled", time.Minute, opt)
			cancel()
			srv.Resume(t)
			require.Error(t, seen(err))
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err = locker.Obtain(cctx, "lock:c", time.Minute, opt)
			require.Error(t, seen(err))
			_, err = locker.Obtain(ctx, "lock:bad", time.Minute, &redislock.Options{Token: secretToken + strings.Repeat("x", redislock.MaxTokenLen)})
			require.ErrorIs(t, seen(err), redislock.ErrInvalidToken)
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		_, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, TLSConfig: srv.TLSConfig(),
			Username: "locker", Password: adminPassword})
		require.Error(t, seen(err))
		require.True(t, strings.Contains(err.Error(), "WRONGPASS"), "%v", err)
	})
	t.Run("no TLS", func(t *testing.T) {
		_, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, Username: "locker", Password: lockerPassword,
			Dialer: rueidisDialer(time.Second)})
		require.Error(t, seen(err))
	})
	require.False(t, errors.Is(nil, redislock.ErrNotObtained))
}
