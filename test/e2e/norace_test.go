//go:build !race

package e2e

// raceEnabled: the tests run without -race, so the server is built without.
const raceEnabled = false
