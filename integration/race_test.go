//go:build race

package integration

// raceEnabled builds the daemon with the race detector when the tests run with -race, so that a data race in
// the daemon fails the test that provoked it (the daemon then exits with status 66).
const raceEnabled = true
