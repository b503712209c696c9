// Package bench compares github.com/seed-223c80a0/redislock with its peers
// against one real redis-server that the benchmarks start themselves: the
// library, github.com/bsm/redislock on go-redis, go-redsync/redsync with its
// go-redis and its rueidis pools, rueidis' own rueidislock (KeyMajority 1 and
// its default, 2), and a floor written with raw rueidis (SET NX PX, then an
// EVALSHA compare-and-delete).
//
// It is a module of its own, so that importing the library never downloads
// go-redis, redsync or bsm/redislock. The package holds no code of its own:
// the comparison is in its _test.go files, and the server comes from the root
// module's internal/redistest.
//
//	go test -run='^$' -bench=. -benchmem -count=10 . | tee new.txt
//	benchstat -col /lib new.txt
//
// BenchmarkContendedHandoff (a 200µs pause after each release) and
// BenchmarkContendedExpiry (a holder that vanishes) measure how a waiter
// gets a contended lock; with BENCH_WAITS_DIR set the first writes its raw
// waits, which cmd/waitcdf draws (make bench-plot: bench/waits.png).
//
// See BENCHMARKS.md at the root of the repository for the latest table.
package bench
