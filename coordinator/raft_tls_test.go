package coordinator

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/tlsutil"
	"github.com/baton-dev/baton/protocol"
)

// testCA makes a CA in a temporary directory and returns a function that
// issues its certificates: role, node and extra DNS names.
func testCA(t *testing.T) (caCert string, issue func(role, node string, dns ...string) tlsutil.Files) {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey, err := tlsutil.CreateCA(dir, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	return caCert, func(role, node string, dns ...string) tlsutil.Files {
		t.Helper()
		cert, key, err := tlsutil.CreateCert(t.TempDir(), caCert, caKey, role, node, 1, dns, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tlsutil.Files{CA: caCert, Cert: cert, Key: key}
	}
}

// Three coordinators whose Raft is mutual TLS form a cluster and
// replicate a write.
func TestRaftTLSCluster(t *testing.T) {
	_, issue := testCA(t)
	cfgs := threeNodeConfigs(t)
	for i := range cfgs {
		cfgs[i].TLS = issue(tlsutil.RoleCoordinator, cfgs[i].NodeID)
	}
	nodes := startNodes(t, cfgs)
	// Each Raft port speaks TLS with a coordinator's certificate.
	for _, cfg := range cfgs {
		clientCfg, err := tlsutil.ClientConfig(cfg.TLS, raftServerName)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", cfg.RaftAddr, clientCfg)
		if err != nil {
			t.Fatalf("%s: TLS to the Raft port: %v", cfg.NodeID, err)
		}
		state := c.ConnectionState()
		c.Close()
		if role, node, ok := tlsutil.PeerRole(&state); !ok || role != tlsutil.RoleCoordinator || node != cfg.NodeID {
			t.Fatalf("%s: the Raft port's certificate is %q %q (%v)", cfg.NodeID, role, node, ok)
		}
	}
	leader := waitLeader(t, nodes)
	testutil.WaitFor(t, 30*time.Second, func() error {
		f := leader.raft.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return err
		}
		if n := len(f.Configuration().Servers); n != 3 {
			return fmt.Errorf("%d servers in the configuration", n)
		}
		return nil
	})
	a := protocol.Agent{ID: "tls-agent", Address: "127.0.0.1:1", Alive: true, Capacity: protocol.Capacity{CPUs: 7}}
	if _, _, err := leader.raftApply(CmdUpsertAgents, UpsertAgentsCmd{Agents: []protocol.Agent{a}, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, n := range nodes {
			if got := n.fsm.State().Agents["tls-agent"]; got == nil || got.Capacity.CPUs != 7 {
				return fmt.Errorf("%s has not applied the write", n.cfg.NodeID)
			}
		}
		return nil
	})
}

// A coordinator configured with TLS but without a certificate of its own
// does not start Raft.
func TestRaftTLSNeedsCertificate(t *testing.T) {
	caCert, _ := testCA(t)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	if _, err := newTLSStreamLayer("127.0.0.1:0", addr, tlsutil.Files{CA: caCert}, time.Second, nil); err == nil {
		t.Fatal("a Raft TLS stream layer without a certificate started")
	}
}

// echoResult is what the server side of a stream layer saw on one
// accepted connection.
type echoResult struct {
	line string
	err  error
}

// serveEcho accepts on s as raft's NetworkTransport does (Accept in a
// loop, each connection in its own goroutine) and answers each line
// with "pong <line>", reporting every connection on the channel.
func serveEcho(s *tlsStreamLayer) <-chan echoResult {
	out := make(chan echoResult, 16)
	go func() {
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					_, err = io.WriteString(c, "pong "+line)
				}
				out <- echoResult{line: strings.TrimSpace(line), err: err}
			}()
		}
	}()
	return out
}

// ping sends a line on c and returns the answer.
func ping(c net.Conn, line string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(got), err
}

func newTestStreamLayer(t *testing.T, f tlsutil.Files, timeout time.Duration) *tlsStreamLayer {
	t.Helper()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: testutil.FreePort(t, "127.0.0.1")}
	s, err := newTLSStreamLayer(addr.String(), addr, f, timeout, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitClosed reads c until the server closes it, failing the test when
// that takes longer than within.
func waitClosed(t *testing.T, c net.Conn, within time.Duration, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the Raft port kept the connection open for %s", what, within)
	}
}

// expectRefused reads the next server-side result and checks that it is
// a refusal mentioning want.
func expectRefused(t *testing.T, results <-chan echoResult, what, want string) {
	t.Helper()
	select {
	case r := <-results:
		if r.err == nil {
			t.Fatalf("%s: the Raft port served it (line %q)", what, r.line)
		}
		if !strings.Contains(r.err.Error(), want) {
			t.Fatalf("%s: refused with %v, want an error mentioning %q", what, r.err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the Raft port neither served nor refused it", what)
	}
}

// The TLS Raft port drops plain TCP clients (garbage or silence) without
// holding up others, and refuses every peer but a coordinator of the
// cluster's CA: an agent's or an LB's certificate from the same CA, or a
// coordinator's from another CA. Dialing out, it refuses a server that is
// not a coordinator.
func TestRaftTLSStreamLayer(t *testing.T) {
	caCert, issue := testCA(t)
	const timeout = 500 * time.Millisecond
	server := newTestStreamLayer(t, issue(tlsutil.RoleCoordinator, "c1"), timeout)
	results := serveEcho(server)
	addr := server.Addr().String()

	// A peer that connects and never says anything is dropped after the
	// handshake timeout, and meanwhile Accept goes on.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	// Garbage in plain TCP is dropped at once.
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage\n"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, plain, 5*time.Second, "plain TCP garbage")

	// A coordinator of the same CA gets through, the silent peer
	// notwithstanding.
	peer := newTestStreamLayer(t, issue(tlsutil.RoleCoordinator, "c2"), timeout)
	c, err := peer.Dial(raft.ServerAddress(addr), 2*time.Second)
	if err != nil {
		t.Fatalf("a coordinator's dial: %v", err)
	}
	got, err := ping(c, "hello")
	c.Close()
	if err != nil || got != "pong hello" {
		t.Fatalf("a coordinator's ping: %q, %v", got, err)
	}
	// The garbage refused, the ping served and, on its timeout, the
	// silent peer refused (in any order).
	var served, refused, timedOut int
	for range 3 {
		select {
		case r := <-results:
			switch {
			case r.err == nil && r.line == "hello":
				served++
			case r.err != nil:
				refused++
				if strings.Contains(r.err.Error(), "timeout") {
					timedOut++
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the Raft port did not finish with the garbage, the coordinator and the silent peer")
		}
	}
	if served != 1 || refused != 2 || timedOut != 1 {
		t.Fatalf("served %d, refused %d (%d on a timeout), want 1, 2 (1)", served, refused, timedOut)
	}
	waitClosed(t, silent, 5*time.Second, "a silent TCP peer")

	// An agent's and an LB's certificates from the same CA are refused
	// after the handshake.
	for _, role := range []string{tlsutil.RoleAgent, tlsutil.RoleLB} {
		t.Run(role, func(t *testing.T) {
			f := issue(role, role+"-1")
			cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: caCert}, raftServerName)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				got, err := ping(c, "let me in")
				c.Close()
				if err == nil {
					t.Fatalf("an %s certificate talked to Raft: %q", role, got)
				}
			}
			expectRefused(t, results, "an "+role+" certificate", "not a coordinator's")
		})
	}

	// A coordinator's certificate from another CA is refused in the
	// handshake.
	t.Run("other CA", func(t *testing.T) {
		_, otherIssue := testCA(t)
		other := otherIssue(tlsutil.RoleCoordinator, "c9")
		// It trusts the cluster's CA, so only the server's check stops it.
		rogue := newTestStreamLayer(t, tlsutil.Files{CA: caCert, Cert: other.Cert, Key: other.Key}, timeout)
		c, err := rogue.Dial(raft.ServerAddress(addr), 2*time.Second)
		if err == nil {
			got, err := ping(c, "let me in")
			c.Close()
			if err == nil {
				t.Fatalf("a certificate from another CA talked to Raft: %q", got)
			}
		}
		expectRefused(t, results, "a certificate from another CA", "certificate")
	})

	// No client certificate at all.
	t.Run("no certificate", func(t *testing.T) {
		cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: caCert}, raftServerName)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			got, err := ping(c, "let me in")
			c.Close()
			if err == nil {
				t.Fatalf("a client without a certificate talked to Raft: %q", got)
			}
		}
		expectRefused(t, results, "no client certificate", "certificate")
	})

	// Dialing out, a coordinator refuses a server that holds an agent's
	// certificate, even one that names server.baton.
	t.Run("dial a non-coordinator", func(t *testing.T) {
		f := issue(tlsutil.RoleAgent, "rogue", raftServerName)
		srvCfg, err := tlsutil.ServerConfig(f, true)
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.(*tls.Conn).Handshake()
					_, _ = io.Copy(io.Discard, c)
				}()
			}
		}()
		c, err := peer.Dial(raft.ServerAddress(l.Addr().String()), 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("a coordinator dialed an agent's certificate for Raft")
		}
		if !strings.Contains(err.Error(), "not a coordinator's") {
			t.Fatalf("dialing an agent: %v, want a refusal of its role", err)
		}
	})

	// The port still serves a coordinator after all that.
	c, err = peer.Dial(raft.ServerAddress(addr), 2*time.Second)
	if err != nil {
		t.Fatalf("a coordinator's dial after the refusals: %v", err)
	}
	got, err = ping(c, "again")
	c.Close()
	if err != nil || got != "pong again" {
		t.Fatalf("a coordinator's ping after the refusals: %q, %v", got, err)
	}
}
