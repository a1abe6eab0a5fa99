//go:build !race

package cblock

const raceEnabled = false
