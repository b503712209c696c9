package redislockotel_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/seed-223c80a0/redislock"
	redislockotel "github.com/seed-223c80a0/redislock/otel"
)

// Example records a span for each operation of a Client and prints them
// with the stdout exporter (on stderr, so that the example's own output
// stays short). It runs on an embedded Redis (miniredis).
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatalln(err)
	}
	defer mr.Close()
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{mr.Addr()}, DisableCache: true, ForceSingleClient: true,
	})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()

	// Spans are printed, pretty, as each one ends.
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(os.Stderr), stdouttrace.WithPrettyPrint())
	if err != nil {
		log.Fatalln(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	ctx := context.Background()
	defer func() { _ = tp.Shutdown(ctx) }()

	// One option: every Obtain, ObtainMulti, Refresh, Release and TTL of
	// locker makes a span (redislock.obtain, redislock.release, ...).
	locker := redislock.New(client, redislockotel.Instrument(redislockotel.WithTracerProvider(tp)))

	lock, err := locker.Obtain(ctx, "my-key", 100*time.Millisecond, nil)
	if err != nil {
		log.Fatalln(err)
	}
	fmt.Println("obtained")

	// Not obtaining a held lock is an outcome, not an error, on its span:
	// redislock.outcome is "not_obtained" and the status stays unset.
	if _, err := locker.Obtain(ctx, "my-key", 100*time.Millisecond, nil); errors.Is(err, redislock.ErrNotObtained) {
		fmt.Println("not obtained: held")
	}

	if err := lock.Release(ctx); err != nil {
		log.Fatalln(err)
	}
	fmt.Println("released")
	// Output:
	// obtained
	// not obtained: held
	// released
}

// ExampleInstrument enables spans and metrics with the global providers,
// which the program's OpenTelemetry setup sets (before or after this line;
// until then, and with noop providers, it costs nothing).
func ExampleInstrument() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()

	locker := redislock.New(client,
		redislock.WithReleaseTimeout(time.Second),
		redislockotel.Instrument(
			redislockotel.WithAttributes(attribute.String("db.namespace", "0")),
		),
	)

	lock, err := locker.Obtain(context.Background(), "my-key", time.Second, nil)
	if err != nil {
		log.Fatalln(err)
	}
	defer func() { _ = lock.Release(context.Background()) }()
}
