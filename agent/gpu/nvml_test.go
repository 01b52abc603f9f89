//go:build cgo

package gpu

import (
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// newDGX returns go-nvml's mock DGX A100 (8 GPUs) with the health queries
// the mock leaves unset answering "fine".
func newDGX(t *testing.T) *server.Server {
	t.Helper()
	s := dgxa100.New()
	for _, d := range s.Devices {
		dev := d.(*server.Device)
		dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 40, nvml.SUCCESS }
		dev.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) {
			return nvml.FEATURE_DISABLED, nvml.SUCCESS
		}
	}
	return s
}

func TestNVMLDGXA100(t *testing.T) {
	s := newDGX(t)
	n := NewNVML(s, nil)
	if !n.Available() {
		t.Fatal("NVML not available with the mock")
	}
	gpus, err := n.GPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 8 {
		t.Fatalf("got %d gpus, want 8", len(gpus))
	}
	for i, g := range gpus {
		dev := s.Devices[i].(*server.Device)
		if g.Index != i || g.Name != "A100" || g.UUID != dev.UUID || !g.Healthy {
			t.Errorf("gpu %d = %+v, want healthy A100 %s", i, g, dev.UUID)
		}
		if g.MemoryMB != 40*1024 {
			t.Errorf("gpu %d memory = %d MB, want %d", i, g.MemoryMB, 40*1024)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNVMLHealth(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(s *server.Server)
		want   string // reason on gpu 2
	}{
		{
			name: "temperature query fails",
			break_: func(s *server.Server) {
				s.Devices[2].(*server.Device).GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
					return 0, nvml.ERROR_GPU_IS_LOST
				}
			},
			want: "temperature query failed: ERROR_GPU_IS_LOST",
		},
		{
			name: "retired pages pending",
			break_: func(s *server.Server) {
				s.Devices[2].(*server.Device).GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) {
					return nvml.FEATURE_ENABLED, nvml.SUCCESS
				}
			},
			want: "retired memory pages pending: reset the GPU",
		},
		{
			name: "handle lost after first read keeps the uuid",
			break_: func(s *server.Server) {
				orig := s.DeviceGetHandleByIndexFunc
				s.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
					if i == 2 {
						return nil, nvml.ERROR_GPU_IS_LOST
					}
					return orig(i)
				}
			},
			want: "get handle: ERROR_GPU_IS_LOST",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newDGX(t)
			n := NewNVML(s, nil)
			if _, err := n.GPUs(); err != nil { // first read: all healthy, identities known
				t.Fatal(err)
			}
			tt.break_(s)
			gpus, err := n.GPUs()
			if err != nil {
				t.Fatal(err)
			}
			if len(gpus) != 8 {
				t.Fatalf("got %d gpus, want 8", len(gpus))
			}
			g := gpus[2]
			if g.Healthy || g.Reason != tt.want || g.UUID != s.Devices[2].(*server.Device).UUID {
				t.Errorf("gpu 2 = %+v, want unhealthy with reason %q", g, tt.want)
			}
			for i, g := range gpus {
				if i != 2 && !g.Healthy {
					t.Errorf("gpu %d unhealthy: %s", i, g.Reason)
				}
			}
		})
	}
}

func TestNVMLInitFails(t *testing.T) {
	s := newDGX(t)
	s.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	n := NewNVML(s, nil)
	if n.Available() {
		t.Fatal("Available after failed Init")
	}
	gpus, err := n.GPUs()
	if err != nil || len(gpus) != 0 {
		t.Fatalf("GPUs() = %v, %v; want none, nil", gpus, err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenNVMLWithoutDriver runs the real library loader. On a machine
// without the NVIDIA driver it must report no GPUs rather than fail; on a
// GPU machine it must report at least one GPU with a UUID.
func TestOpenNVMLWithoutDriver(t *testing.T) {
	src := OpenNVML(nil)
	defer src.Close()
	gpus, err := src.GPUs()
	if err != nil {
		t.Fatal(err)
	}
	n := src.(*NVML)
	if !n.Available() && len(gpus) != 0 {
		t.Fatalf("no driver but %d gpus", len(gpus))
	}
	if n.Available() {
		if len(gpus) == 0 || gpus[0].UUID == "" {
			t.Fatalf("driver present but gpus = %+v", gpus)
		}
		t.Logf("real gpus: %+v", gpus)
	}
}
