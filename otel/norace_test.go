//go:build !race

package redislockotel_test

// raceEnabled is true under -race, where sync.Pool drops items at random and
// allocation counts vary from run to run.
const raceEnabled = false
