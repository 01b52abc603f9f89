// Package gpu reports the accelerators of one machine: their names, UUIDs,
// memory and health. NVML reads real NVIDIA GPUs; Fake stands in for them in
// tests and on machines without GPUs.
package gpu

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/baton-dev/baton/protocol"
)

// Source lists the GPUs of a machine. Implementations are safe for
// concurrent use.
type Source interface {
	// GPUs returns every GPU, ordered by index, with its current health.
	// A machine without GPUs (or without a driver) returns none and no
	// error.
	GPUs() ([]protocol.GPU, error)
	// Close releases the source's resources.
	Close() error
}

var _ Source = (*Fake)(nil)

// fakeMemoryMB gives fake GPUs a plausible memory size by model.
var fakeMemoryMB = map[string]int{
	"A100":      40960,
	"A100-80GB": 81920,
	"H100":      81920,
	"H200":      143360,
	"L4":        23034,
	"T4":        15360,
	"V100":      16384,
	"A10G":      23028,
}

// Fake is a Source with made-up GPUs whose health tests can change. It is
// safe for concurrent use.
type Fake struct {
	mu   sync.Mutex // guards gpus
	gpus []protocol.GPU
}

// NewFake builds fake GPUs from a spec like "A100:2,H100:1" ("T4" means
// "T4:1"). UUIDs are deterministic: GPU-fake-<agentID>-<index>. All start
// healthy. An empty spec gives no GPUs.
func NewFake(agentID, spec string) (*Fake, error) {
	f := &Fake{}
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return f, nil
	}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		name, countText, hasCount := strings.Cut(part, ":")
		name = strings.TrimSpace(name)
		count := 1
		if hasCount {
			n, err := strconv.Atoi(strings.TrimSpace(countText))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("accelerators %q: count %q of %s is not a positive integer (use NAME:COUNT, like A100:2)", spec, countText, name)
			}
			count = n
		}
		if name == "" {
			return nil, fmt.Errorf("accelerators %q: empty GPU name (use NAME:COUNT, like A100:2)", spec)
		}
		mem, ok := fakeMemoryMB[name]
		if !ok {
			mem = 16384
		}
		for range count {
			i := len(f.gpus)
			f.gpus = append(f.gpus, protocol.GPU{
				Index:    i,
				Name:     name,
				UUID:     fmt.Sprintf("GPU-fake-%s-%d", agentID, i),
				MemoryMB: mem,
				Healthy:  true,
			})
		}
	}
	return f, nil
}

// GPUs returns a copy of the fake GPUs.
func (f *Fake) GPUs() ([]protocol.GPU, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]protocol.GPU, len(f.gpus))
	copy(out, f.gpus)
	return out, nil
}

// SetHealth marks the GPU with the given UUID healthy or not, with a reason
// for an unhealthy one. It fails for an unknown UUID.
func (f *Fake) SetHealth(uuid string, healthy bool, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.gpus {
		if f.gpus[i].UUID == uuid {
			f.gpus[i].Healthy = healthy
			f.gpus[i].Reason = ""
			if !healthy {
				f.gpus[i].Reason = reason
			}
			return nil
		}
	}
	return fmt.Errorf("fake gpu %s: no such GPU", uuid)
}

// Close does nothing.
func (f *Fake) Close() error { return nil }

// ShortName turns an NVML product name into the short name task specs use:
// "NVIDIA A100-SXM4-40GB" -> "A100", "NVIDIA A100-SXM4-80GB" -> "A100-80GB",
// "Tesla T4" -> "T4", "NVIDIA H100 80GB HBM3" -> "H100",
// "NVIDIA GeForce RTX 4090" -> "RTX4090".
func ShortName(product string) string {
	fields := strings.Fields(product)
	for len(fields) > 1 && vendorWords[fields[0]] {
		fields = fields[1:]
	}
	if len(fields) == 0 {
		return product
	}
	first := fields[0]
	if (first == "RTX" || first == "GTX") && len(fields) > 1 {
		return first + fields[1]
	}
	model, _, _ := strings.Cut(first, "-")
	if model == "A100" && strings.Contains(product, "80GB") {
		return "A100-80GB"
	}
	return model
}

// vendorWords are words before the model in NVML product names ("Mock" is
// what go-nvml's mock servers prefix).
var vendorWords = map[string]bool{"NVIDIA": true, "Tesla": true, "GeForce": true, "Quadro": true, "Mock": true}
