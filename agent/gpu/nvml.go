//go:build cgo

package gpu

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/baton-dev/baton/protocol"
)

var _ Source = (*NVML)(nil)

// NVML reads NVIDIA GPUs through the NVML library (libnvidia-ml.so.1, loaded
// at run time; go-nvml needs cgo to build). Where the library or driver is
// absent it reports no GPUs. It is safe for concurrent use.
//
// Health: a GPU is unhealthy when a basic query about it fails (handle,
// memory, temperature; ERROR_GPU_IS_LOST, say) or when it has retired memory
// pages pending a reset. A GPU that was seen once and then cannot be read is
// still reported, unhealthy, under its last known UUID.
type NVML struct {
	lib    nvml.Interface
	logger *slog.Logger

	mu    sync.Mutex           // guards known; serialises NVML calls
	ready bool                 // Init succeeded; set once in NewNVML
	known map[int]protocol.GPU // last successfully read GPU per index
}

// OpenNVML loads the system's NVML library. Without it (no driver, no GPU)
// the returned Source reports zero GPUs and logs that once at info level.
func OpenNVML(logger *slog.Logger) Source {
	return NewNVML(nvml.New(), logger)
}

// NewNVML initialises lib (the real library from nvml.New, or a mock such
// as go-nvml's dgxa100). If Init fails, the NVML reports zero GPUs.
// logger may be nil.
func NewNVML(lib nvml.Interface, logger *slog.Logger) *NVML {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &NVML{lib: lib, logger: logger, known: map[int]protocol.GPU{}}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		logger.Info("nvml unavailable, reporting no gpus", "error", nvmlError(ret))
		return n
	}
	n.ready = true
	if version, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		logger.Info("nvml initialised", "driver_version", version)
	}
	return n
}

// Available reports whether NVML initialised.
func (n *NVML) Available() bool { return n.ready }

// GPUs queries every device and its health.
func (n *NVML) GPUs() ([]protocol.GPU, error) {
	if !n.ready {
		return nil, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %w", nvmlError(ret))
	}
	out := make([]protocol.GPU, 0, count)
	for i := range count {
		g, err := n.readDevice(i)
		if err != nil {
			last, seen := n.known[i]
			if !seen {
				n.logger.Warn("gpu unreadable", "index", i, "error", err)
				continue
			}
			last.Healthy = false
			last.Reason = err.Error()
			out = append(out, last)
			continue
		}
		n.known[i] = protocol.GPU{Index: g.Index, Name: g.Name, UUID: g.UUID, MemoryMB: g.MemoryMB, Healthy: true}
		out = append(out, g)
	}
	return out, nil
}

// readDevice reads one GPU. An error means the GPU's identity could not be
// read; a GPU whose identity is known but whose health checks fail is
// returned unhealthy with a nil error.
func (n *NVML) readDevice(i int) (protocol.GPU, error) {
	dev, ret := n.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return protocol.GPU{}, fmt.Errorf("get handle: %w", nvmlError(ret))
	}
	uuid, ret := dev.GetUUID()
	if ret != nvml.SUCCESS {
		return protocol.GPU{}, fmt.Errorf("get uuid: %w", nvmlError(ret))
	}
	name, ret := dev.GetName()
	if ret != nvml.SUCCESS {
		return protocol.GPU{}, fmt.Errorf("get name: %w", nvmlError(ret))
	}
	g := protocol.GPU{Index: i, Name: ShortName(name), UUID: uuid, Healthy: true}
	mem, ret := dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		g.Healthy, g.Reason = false, fmt.Sprintf("memory query failed: %v", nvmlError(ret))
		return g, nil
	}
	g.MemoryMB = int(mem.Total / (1024 * 1024))
	if _, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED {
		g.Healthy, g.Reason = false, fmt.Sprintf("temperature query failed: %v", nvmlError(ret))
		return g, nil
	}
	pending, ret := dev.GetRetiredPagesPendingStatus()
	switch {
	case ret == nvml.SUCCESS && pending == nvml.FEATURE_ENABLED:
		g.Healthy, g.Reason = false, "retired memory pages pending: reset the GPU"
	case ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED:
		g.Healthy, g.Reason = false, fmt.Sprintf("retired pages query failed: %v", nvmlError(ret))
	}
	return g, nil
}

// Close shuts NVML down if it was initialised.
func (n *NVML) Close() error {
	if !n.ready {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %w", nvmlError(ret))
	}
	return nil
}

// nvmlError turns an NVML return code into an error that errors.Is matches
// against nvml.Return values.
func nvmlError(ret nvml.Return) error {
	return ret
}
