//go:build race

package dockerpool

func init() { raceBuild = true }
