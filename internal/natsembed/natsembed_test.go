package natsembed

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// waitFor polls fn until it returns nil or d passes.
func waitFor(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Three servers given each other's route URLs after they started form one
// cluster: a message published on one reaches a subscriber on another,
// and the cluster survives losing a server.
func TestSetRoutesFormsACluster(t *testing.T) {
	var servers []*Server
	var routes []string
	for range 3 {
		s, err := Start(Config{Port: -1, ClusterPort: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		servers = append(servers, s)
		routes = append(routes, s.ClusterURL())
	}
	for _, s := range servers {
		if err := s.SetRoutes(routes); err != nil {
			t.Fatal(err)
		}
		// Unchanged routes are no reload.
		if err := s.SetRoutes(routes); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, func() error {
		for i, s := range servers {
			if n := s.NumRoutes(); n < 2 {
				return fmt.Errorf("server %d has %d routes", i, n)
			}
		}
		return nil
	})
	sub, err := nats.Connect(servers[0].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := make(chan string, 16)
	if _, err := sub.Subscribe("hello", func(m *nats.Msg) { got <- string(m.Data) }); err != nil {
		t.Fatal(err)
	}
	_ = sub.Flush()
	servers[1].Shutdown()
	pub, err := nats.Connect(servers[2].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	waitFor(t, 10*time.Second, func() error {
		_ = pub.Publish("hello", []byte("world"))
		select {
		case m := <-got:
			if m != "world" {
				return fmt.Errorf("got %q", m)
			}
			return nil
		case <-time.After(100 * time.Millisecond):
			return fmt.Errorf("no message routed from server 2 to server 0")
		}
	})
}
