package main

import (
	"strings"
	"testing"
)

func TestParseAgentSpec(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    agentSpec
		wantErr string
	}{
		{name: "cpus", in: "cpus=2", want: agentSpec{cpus: 2}},
		{name: "all keys", in: "cpus=4,memory=16GB,accelerators=A100:1,region=eu", want: agentSpec{cpus: 4, memory: 16, accelerators: "A100:1", region: "eu"}},
		{name: "accelerator list continues", in: "cpus=8,accelerators=A100:2,H100:1", want: agentSpec{cpus: 8, accelerators: "A100:2,H100:1"}},
		{name: "empty means detect", in: "", want: agentSpec{}},
		{name: "unknown key", in: "cpus=2,disk=10", wantErr: `unknown key "disk"`},
		{name: "not a number", in: "cpus=two", wantErr: `cpus="two" is not a number`},
		{name: "stray piece", in: "cpus=2,foo", wantErr: `"foo" is not key=value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAgentSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
