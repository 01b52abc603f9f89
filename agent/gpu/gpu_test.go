package gpu

import (
	"testing"
)

func TestNewFake(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    []string // names by index
		wantErr bool
	}{
		{name: "empty", spec: "", want: nil},
		{name: "one model", spec: "A100:2", want: []string{"A100", "A100"}},
		{name: "no count means one", spec: "T4", want: []string{"T4"}},
		{name: "mixed", spec: "A100:2, H100:1", want: []string{"A100", "A100", "H100"}},
		{name: "bad count", spec: "A100:x", wantErr: true},
		{name: "zero count", spec: "A100:0", wantErr: true},
		{name: "empty name", spec: ":2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewFake("agent-1", tt.spec)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NewFake(%q) = nil error, want one", tt.spec)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewFake(%q): %v", tt.spec, err)
			}
			gpus, err := f.GPUs()
			if err != nil {
				t.Fatal(err)
			}
			if len(gpus) != len(tt.want) {
				t.Fatalf("got %d gpus, want %d", len(gpus), len(tt.want))
			}
			for i, g := range gpus {
				if g.Name != tt.want[i] || g.Index != i || !g.Healthy || g.MemoryMB <= 0 {
					t.Errorf("gpu %d = %+v, want healthy %s", i, g, tt.want[i])
				}
				if want := "GPU-fake-agent-1-" + string(rune('0'+i)); g.UUID != want {
					t.Errorf("gpu %d uuid = %q, want %q", i, g.UUID, want)
				}
			}
		})
	}
}

func TestFakeSetHealth(t *testing.T) {
	f, err := NewFake("a", "H100:2")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetHealth("GPU-fake-a-1", false, "xid 79"); err != nil {
		t.Fatal(err)
	}
	gpus, _ := f.GPUs()
	if !gpus[0].Healthy || gpus[1].Healthy || gpus[1].Reason != "xid 79" {
		t.Fatalf("after SetHealth: %+v", gpus)
	}
	if err := f.SetHealth("GPU-fake-a-1", true, ""); err != nil {
		t.Fatal(err)
	}
	gpus, _ = f.GPUs()
	if !gpus[1].Healthy || gpus[1].Reason != "" {
		t.Fatalf("after recovery: %+v", gpus[1])
	}
	if err := f.SetHealth("GPU-nope", false, ""); err == nil {
		t.Fatal("SetHealth of unknown uuid succeeded")
	}
}

func TestShortName(t *testing.T) {
	tests := []struct{ name, product, want string }{
		{"a100 40gb", "NVIDIA A100-SXM4-40GB", "A100"},
		{"a100 80gb", "NVIDIA A100-SXM4-80GB", "A100-80GB"},
		{"a100 pcie 80gb", "NVIDIA A100 80GB PCIe", "A100-80GB"},
		{"h100", "NVIDIA H100 80GB HBM3", "H100"},
		{"t4", "Tesla T4", "T4"},
		{"l4", "NVIDIA L4", "L4"},
		{"rtx", "NVIDIA GeForce RTX 4090", "RTX4090"},
		{"a10g", "NVIDIA A10G", "A10G"},
		{"go-nvml mock", "Mock NVIDIA A100-SXM4-40GB", "A100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ShortName(tt.product); got != tt.want {
				t.Errorf("ShortName(%q) = %q, want %q", tt.product, got, tt.want)
			}
		})
	}
}
