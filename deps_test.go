package redislock_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The core module imports rueidis and the standard library only: importing
// it never pulls in OpenTelemetry, go-redis or the peers it is compared with
// (those live in the otel and bench modules).
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if !strings.HasPrefix(pkg, "github.com/seed-223c80a0/redislock") &&
			!strings.HasPrefix(pkg, "github.com/redis/rueidis") &&
			!strings.HasPrefix(pkg, "golang.org/x/sys") {
			t.Errorf("the library depends on %s", pkg)
		}
	}
}
