// Package hooks gives this repository's own tools (cmd/bench) entry points of
// package dockerpool that are not part of its public API. Package dockerpool
// sets them in its init; they are nil until it is linked in.
package hooks

import "context"

// NewPoolWithAPI starts a pool from a dockerpool.Config against any
// implementation of the pool's Docker seam, such as internal/fakedocker's
// Fake. It returns a *dockerpool.Pool.
var NewPoolWithAPI func(ctx context.Context, cfg any, api any) (any, error)
