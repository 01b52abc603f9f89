package protocol

import (
	"testing"
)

func TestParseTaskUnsupportedKeys(t *testing.T) {
	const (
		docker      = "docker images are not supported yet: baton runs replicas directly on the agent's machine, not in containers; remove image_id and install what the image provides in setup"
		serviceKeys = "(valid keys here: load_balancing_policy, ports, readiness_probe, replica_policy, replicas, response_timeout_seconds)"
		topKeys     = "(valid keys here: envs, file_mounts, name, num_nodes, resources, run, secrets, service, setup, workdir)"
	)
	tests := []struct {
		name  string
		data  []byte
		lines []string // the whole error, one problem a line
	}{
		{
			name: "service tls",
			data: withMinimal("  tls:", "    keyfile: ~/key.pem", "    certfile: ~/cert.pem"),
			lines: []string{
				"task.yaml:4: service.tls: not supported: baton's load balancers serve plain HTTP; terminate TLS in front of them (a reverse proxy or cloud load balancer holding the keyfile and certfile) and remove tls " + serviceKeys,
			},
		},
		{
			name:  "tls at the top level is only unknown",
			data:  withMinimal("tls: {keyfile: k, certfile: c}"),
			lines: []string{"task.yaml:4: tls: unknown key " + topKeys},
		},
		{
			name:  "file_mounts in service is only unknown",
			data:  withMinimal("  file_mounts: {}"),
			lines: []string{"task.yaml:4: service.file_mounts: unknown key " + serviceKeys},
		},
		{
			name:  "any_of at the top level is only unknown",
			data:  withMinimal("any_of: []"),
			lines: []string{"task.yaml:4: any_of: unknown key " + topKeys},
		},
		{
			name:  "docker image in resources",
			data:  withMinimal("resources:", "  image_id: docker:vllm/vllm-openai:latest"),
			lines: []string{"task.yaml:5: resources.image_id: " + docker},
		},
		{
			name:  "docker image at the top level",
			data:  withMinimal("image_id: docker:ubuntu:22.04"),
			lines: []string{"task.yaml:4: image_id: " + docker},
		},
		{
			name:  "quoted docker image",
			data:  withMinimal("resources:", "  image_id: 'docker:nvcr.io/nvidia/pytorch:24.01-py3'"),
			lines: []string{"task.yaml:5: resources.image_id: " + docker},
		},
		{
			name:  "docker image on the next line",
			data:  withMinimal("resources:", "  image_id:", "    docker:vllm/vllm-openai"),
			lines: []string{"task.yaml:6: resources.image_id: " + docker},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTask("task.yaml", tt.data)
			wantErrorLines(t, err, tt.lines...)
		})
	}

	warned := []struct {
		name string
		data []byte
		warn string
	}{
		{"machine image in resources", withMinimal("resources:", "  image_id: ami-0123456789abcdef0"), "task.yaml:5: resources.image_id: ignored: baton places replicas on its own agents"},
		{"machine image at the top level", withMinimal("image_id: projects/deeplearning-platform/global/images/x"), "task.yaml:4: image_id: ignored: baton places replicas on its own agents"},
		{"images by region", withMinimal("resources:", "  image_id: {us-east-1: ami-1, us-west-2: ami-2}"), "task.yaml:5: resources.image_id: ignored: baton places replicas on its own agents"},
	}
	for _, tt := range warned {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.data)
			if len(s.Warnings) != 1 || s.Warnings[0] != tt.warn {
				t.Errorf("Warnings = %q, want [%q]", s.Warnings, tt.warn)
			}
		})
	}
}
