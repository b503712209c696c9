package redistest

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestPauseWatch_Paused(t *testing.T) {
	ms := time.Millisecond
	t0 := time.Now()
	w := &PauseWatch{spans: [][2]time.Time{{t0.Add(10 * ms), t0.Add(20 * ms)}, {t0.Add(30 * ms), t0.Add(100 * ms)}}}
	for _, tc := range []struct{ from, to, want time.Duration }{
		{0, 5 * ms, 0},
		{0, 15 * ms, 5 * ms},
		{12 * ms, 40 * ms, 18 * ms},
		{0, time.Second, 80 * ms},
		{100 * ms, time.Second, 0},
	} {
		if got := w.Paused(t0.Add(tc.from), t0.Add(tc.to)); got != tc.want {
			t.Errorf("Paused(%v, %v) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

// The test process stops itself (SIGSTOP) and a child process continues
// it 300ms later: the watch sees a pause of at least 200ms then.
func TestPauseWatch_seesAStoppedProcess(t *testing.T) {
	w := WatchPauses(t)
	cont := exec.Command("sh", "-c", "sleep 0.3; kill -CONT "+strconv.Itoa(os.Getpid()))
	if err := cont.Start(); err != nil {
		t.Fatal(err)
	}
	from := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := cont.Wait(); err != nil {
		t.Fatal(err)
	}
	// The watch's goroutine records the span at its first tick after.
	deadline := time.Now().Add(10 * time.Second)
	for w.Paused(from, time.Now()) < 200*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("no pause seen: %v", w.Paused(from, time.Now()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
