package safety_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// proxy is an in-process toxiproxy between the clients and one
// redis-server, stopped when the test ends.
type proxy struct {
	*toxiproxy.Proxy
	t *testing.T
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &proxy{Proxy: p, t: t}
}

// Addr is where clients connect.
func (p *proxy) Addr() string { return p.Listen }

// toxic adds a toxic (type "latency", "timeout", "reset_peer", ...) on
// stream ("upstream": towards Redis; "downstream": the replies) with its
// attributes as JSON, and returns its name.
func (p *proxy) toxic(kind, stream, attrs string) string {
	p.t.Helper()
	name := fmt.Sprintf("%s_%s", kind, stream)
	body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, kind, stream, attrs)
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		p.t.Fatalf("toxiproxy: add %s: %v", name, err)
	}
	return name
}

// remove removes a toxic added by toxic.
func (p *proxy) remove(name string) {
	p.t.Helper()
	if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		p.t.Fatalf("toxiproxy: remove %s: %v", name, err)
	}
}
