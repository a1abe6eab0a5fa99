//go:build !race

package nvlog

const raceEnabled = false
