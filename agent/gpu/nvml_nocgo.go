//go:build !cgo

package gpu

import (
	"log/slog"

	"github.com/baton-dev/baton/protocol"
)

// OpenNVML returns a Source with no GPUs: this binary was built without cgo,
// which go-nvml needs.
func OpenNVML(logger *slog.Logger) Source {
	if logger != nil {
		logger.Info("nvml unavailable, reporting no gpus", "error", "built without cgo")
	}
	return none{}
}

// none is a Source with no GPUs.
type none struct{}

func (none) GPUs() ([]protocol.GPU, error) { return nil, nil }
func (none) Close() error                  { return nil }
