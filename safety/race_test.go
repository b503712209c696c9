//go:build race

package safety_test

// raceEnabled: the race detector slows every goroutine several times over
// and pauses the whole process now and then.
const raceEnabled = true
