package bus

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-dev/baton/internal/testutil"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(discard{}, nil))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestValidSubject(t *testing.T) {
	for _, tc := range []struct {
		name    string
		subject string
		ok      bool
	}{
		{"plain", "baton.agent.a-1.desired", true},
		{"empty", "", false},
		{"empty token", "baton..desired", false},
		{"trailing dot", "baton.agent.", false},
		{"space", "baton.agent.a b.desired", false},
		{"wildcard", "baton.agent.*.desired", false},
		{"too long", "baton." + strings.Repeat("a", MaxSubjectLen), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidSubject(tc.subject)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidSubject(%q) = %v, want ok=%v", tc.subject, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidSubject) {
				t.Fatalf("error %v does not match ErrInvalidSubject", err)
			}
		})
	}
}

// TestReplacesConnectionClosedByServer makes the server close the
// connection with an error nats.go never recovers from (a control line
// over the server's limit): the Conn opens a new one, its subscription
// works again and Health says ok.
func TestReplacesConnectionClosedByServer(t *testing.T) {
	url := testutil.NATS(t)
	c, err := Connect(Config{URL: url, Name: "test", Logger: quietLogger(), ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var got atomic.Int64
	if _, err := c.Subscribe("t.echo", func(*nats.Msg) { got.Add(1) }); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error { return c.Health() })

	// What a daemon once did with an unvalidated id: the raw nats.go
	// connection sends it, the server answers -ERR and closes.
	old, _ := c.conn()
	_ = old.Publish("baton.agent."+strings.Repeat("x", 5000)+".desired", nil)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !old.IsClosed() {
			return errors.New("old connection not closed yet")
		}
		if c.Replacements() != 1 {
			return errors.New("not replaced yet")
		}
		return c.Health()
	})
	// The subscription was made again on the new connection.
	pub, err := Connect(Config{URL: url, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if err := pub.Publish("t.echo", []byte("x")); err != nil {
			return err
		}
		if got.Load() == 0 {
			return errors.New("no message received on the replacement connection")
		}
		return nil
	})
}

func TestPublishRefusesInvalid(t *testing.T) {
	url := testutil.NATS(t)
	c, err := Connect(Config{URL: url, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	testutil.WaitFor(t, 5*time.Second, func() error { return c.Health() })
	if err := c.Publish("baton.agent."+strings.Repeat("x", 5000)+".desired", nil); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("long subject: %v", err)
	}
	if err := c.Publish("ok", make([]byte, c.MaxPayload()+1)); err == nil {
		t.Fatal("oversize payload accepted")
	}
	if _, err := c.Subscribe("a..b", func(*nats.Msg) {}); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("bad subscription: %v", err)
	}
	if _, err := c.Request(context.Background(), "a b", nil); !errors.Is(err, ErrInvalidSubject) {
		t.Fatalf("bad request subject: %v", err)
	}
	// The connection is still the first one: nothing made the server close it.
	if c.Replacements() != 0 || c.Health() != nil {
		t.Fatalf("replacements %d health %v", c.Replacements(), c.Health())
	}
	c.Close()
	if err := c.Publish("ok", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}
