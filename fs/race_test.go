//go:build race

package fs

// raceEnabled: the race detector slows every request several times; the longest randomized tests do fewer
// rounds under it.
const raceEnabled = true
