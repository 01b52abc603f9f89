package testutil

import (
	"io"
	"net"
	"sync"
	"testing"
)

// TCPProxy forwards connections from a loopback port to target until cut
// is called; then it closes every connection and closes new ones at once
// (it keeps the port, so no other server can take it while the component
// retries). Tests use it to make a component fall silent (a partition)
// without stopping it. It is closed when the test ends.
func TCPProxy(t testing.TB, target string) (addr string, cut func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  bool
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if done {
			c.Close()
			return false
		}
		conns = append(conns, c)
		return true
	}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			cutOff := done
			mu.Unlock()
			if cutOff {
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			if !track(in) || !track(out) {
				in.Close()
				out.Close()
				continue
			}
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	cut = func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		done = true
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(func() {
		cut()
		ln.Close()
	})
	return ln.Addr().String(), cut
}
