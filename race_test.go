//go:build race

package dockerpool_test

func init() { raceEnabled = true }
