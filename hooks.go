package dockerpool

import (
	"context"
	"fmt"

	"github.com/dockerpool/dockerpool/internal/hooks"
)

// Entry points for this repository's own tools; see internal/hooks.
func init() {
	hooks.NewPoolWithAPI = func(ctx context.Context, cfg any, api any) (any, error) {
		c, ok := cfg.(Config)
		if !ok {
			return nil, fmt.Errorf("hooks: cfg is %T, not dockerpool.Config", cfg)
		}
		a, ok := api.(dockerAPI)
		if !ok {
			return nil, fmt.Errorf("hooks: %T does not implement the Docker seam", api)
		}
		s, err := resolve(c)
		if err != nil {
			return nil, err
		}
		return newPool(ctx, s, a)
	}
}
