package main

import (
	"os"
	"testing"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// TestMain reports the tests skipped for want of a daemon or test image.
func TestMain(m *testing.M) { os.Exit(dockerpooltest.Main(m).Run()) }
