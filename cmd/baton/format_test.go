package main

import (
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/protocol"
)

func TestFormatUptime(t *testing.T) {
	tests := []struct {
		name string
		secs int64
		want string
	}{
		{"zero", 0, "-"},
		{"negative", -5, "-"},
		{"seconds", 41, "41s"},
		{"one minute", 60, "1m 0s"},
		{"minutes", 101, "1m 41s"},
		{"hours", 2*3600 + 3*60 + 5, "2h 3m 5s"},
		{"hours keep zero minutes", 2*3600 + 5, "2h 0m 5s"},
		{"days", 86400 + 9, "1d 0h 0m 9s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatUptime(tt.secs); got != tt.want {
				t.Errorf("formatUptime(%d) = %q, want %q", tt.secs, got, tt.want)
			}
		})
	}
}

func TestFormatLaunched(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ago  time.Duration
		zero bool
		want string
	}{
		{"zero time", 0, true, "-"},
		{"future (clock skew)", -3 * time.Second, false, "0 secs ago"},
		{"one sec", 1500 * time.Millisecond, false, "1 sec ago"},
		{"secs", 59 * time.Second, false, "59 secs ago"},
		{"one min", 61 * time.Second, false, "1 min ago"},
		{"mins", 2*time.Minute + 30*time.Second, false, "2 mins ago"},
		{"one hr", 90 * time.Minute, false, "1 hr ago"},
		{"hrs", 23 * time.Hour, false, "23 hrs ago"},
		{"one day", 25 * time.Hour, false, "1 day ago"},
		{"days", 72 * time.Hour, false, "3 days ago"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var at time.Time
			if !tt.zero {
				at = now.Add(-tt.ago)
			}
			if got := formatLaunched(at, now); got != tt.want {
				t.Errorf("formatLaunched(now-%s) = %q, want %q", tt.ago, got, tt.want)
			}
		})
	}
}

func TestWriteStatus(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		st   protocol.StatusResponse
		want string
	}{
		{
			name: "no services",
			st:   protocol.StatusResponse{},
			want: "No existing services.\n",
		},
		{
			name: "update in progress",
			st: protocol.StatusResponse{
				Services: []protocol.ServiceStatusView{{
					Name: "http-server", Version: 2, ActiveVersions: []int{1}, UptimeSeconds: 101,
					Status: protocol.ServiceReady, ReadyReplicas: 2, TotalReplicas: 4,
					Endpoint: "127.0.0.1:30001",
				}},
				Replicas: []protocol.ReplicaStatusView{
					{ServiceName: "http-server", ID: 1, Version: 1, Endpoint: "127.0.0.1:8081",
						LaunchedAt: now.Add(-2 * time.Minute), Resources: "1x agent-1(vCPU=2)",
						Status: protocol.ReplicaReady, Region: "local"},
					{ServiceName: "http-server", ID: 2, Version: 1, Endpoint: "127.0.0.1:8082",
						LaunchedAt: now.Add(-2 * time.Minute), Resources: "1x agent-1(vCPU=2)",
						Status: protocol.ReplicaReady, Region: "local"},
					{ServiceName: "http-server", ID: 3, Version: 2, Endpoint: "127.0.0.1:8083",
						LaunchedAt: now.Add(-12 * time.Second), Resources: "1x agent-2(vCPU=4)",
						Status: protocol.ReplicaProvisioning, Region: "local"},
					{ServiceName: "http-server", ID: 4, Version: 2,
						Status: protocol.ReplicaPending, Reason: "no agent fits cpus 4+"},
				},
			},
			want: `Services
NAME         VERSION  UPTIME  STATUS  REPLICAS  ENDPOINT
http-server  2        1m 41s  READY   2/4       127.0.0.1:30001

Service Replicas
SERVICE_NAME  ID  VERSION  IP              LAUNCHED     RESOURCES           STATUS        REGION
http-server   1   1        127.0.0.1:8081  2 mins ago   1x agent-1(vCPU=2)  READY         local
http-server   2   1        127.0.0.1:8082  2 mins ago   1x agent-1(vCPU=2)  READY         local
http-server   3   2        127.0.0.1:8083  12 secs ago  1x agent-2(vCPU=4)  PROVISIONING  local
http-server   4   2        -               -            -                   PENDING       -

Reasons
  http-server replica 4 (PENDING): no agent fits cpus 4+
`,
		},
		{
			name: "service reason and stale replica reason",
			st: protocol.StatusResponse{
				Services: []protocol.ServiceStatusView{
					{Name: "a", Version: 1, Status: protocol.ServiceReplicaInit, TotalReplicas: 1},
					{Name: "long-service-name", Version: 3, UptimeSeconds: 7385,
						Status: protocol.ServiceNoReplica, TotalReplicas: 1, Endpoint: "127.0.0.1:30002",
						Reason: "version 3 failed:\nrolled back to 2"},
				},
				Replicas: []protocol.ReplicaStatusView{
					{ServiceName: "a", ID: 1, Version: 1, Endpoint: "10.0.0.1:9000",
						LaunchedAt: now.Add(-time.Second), Resources: "1x b(vCPU=1)",
						Status: protocol.ReplicaReady, Region: "eu", Reason: "was NOT_READY once"},
					{ServiceName: "long-service-name", ID: 7, Version: 3, Endpoint: "10.0.0.2:9000",
						LaunchedAt: now.Add(-3 * time.Hour), Resources: "1x c(vCPU=8, A100:1)",
						Status: protocol.ReplicaFailedInitialDelay, Region: "us",
						Reason: "no probe passed within 20s"},
				},
			},
			want: `Services
NAME               VERSION  UPTIME    STATUS        REPLICAS  ENDPOINT
a                  1        -         REPLICA_INIT  0/1       -
long-service-name  3        2h 3m 5s  NO_REPLICA    0/1       127.0.0.1:30002

Service Replicas
SERVICE_NAME       ID  VERSION  IP             LAUNCHED   RESOURCES             STATUS                REGION
a                  1   1        10.0.0.1:9000  1 sec ago  1x b(vCPU=1)          READY                 eu
long-service-name  7   3        10.0.0.2:9000  3 hrs ago  1x c(vCPU=8, A100:1)  FAILED_INITIAL_DELAY  us

Reasons
  long-service-name (NO_REPLICA): version 3 failed: rolled back to 2
  long-service-name replica 7 (FAILED_INITIAL_DELAY): no probe passed within 20s
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := writeStatus(&b, &tt.st, now); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("writeStatus output:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestWriteStatusColumns checks that every row's cells start where the
// header's do, whatever the widths.
func TestWriteStatusColumns(t *testing.T) {
	now := time.Now()
	st := &protocol.StatusResponse{
		Services: []protocol.ServiceStatusView{
			{Name: "x", Version: 10, UptimeSeconds: 1, Status: protocol.ServiceReady, ReadyReplicas: 10, TotalReplicas: 12, Endpoint: "e"},
			{Name: "a-much-longer-name", Version: 1, Status: protocol.ServiceControllerInit},
		},
		Replicas: []protocol.ReplicaStatusView{
			{ServiceName: "x", ID: 123, Version: 10, Endpoint: "127.0.0.11:40000", LaunchedAt: now, Resources: "r", Status: protocol.ReplicaStarting, Region: "local"},
		},
	}
	var b strings.Builder
	if err := writeStatus(&b, st, now); err != nil {
		t.Fatal(err)
	}
	sections := strings.Split(b.String(), "\n\n")
	if len(sections) != 2 {
		t.Fatalf("want 2 sections, got %d:\n%s", len(sections), b.String())
	}
	for _, sec := range sections {
		lines := strings.Split(strings.TrimRight(sec, "\n"), "\n")[1:] // drop the title
		starts := cellStarts(lines[0])
		for _, l := range lines[1:] {
			got := cellStarts(l)
			if len(got) != len(starts) {
				t.Errorf("row %q has %d cells, header has %d", l, len(got), len(starts))
				continue
			}
			for i := range starts {
				if got[i] != starts[i] {
					t.Errorf("row %q: cell %d starts at %d, header's at %d", l, i, got[i], starts[i])
				}
			}
		}
	}
}

// cellStarts returns where each cell of a table line begins, taking two or
// more spaces as a separator.
func cellStarts(line string) []int {
	starts := []int{0}
	for i := 2; i < len(line); i++ {
		if line[i] != ' ' && line[i-1] == ' ' && line[i-2] == ' ' {
			starts = append(starts, i)
		}
	}
	return starts
}
