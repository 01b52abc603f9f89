package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/baton-dev/baton/internal/bundle"
	"github.com/baton-dev/baton/protocol"
)

// uploadTimeout bounds one upload try, replication to the other
// coordinators included.
const uploadTimeout = 30 * time.Minute

// shipCode packs the task's workdir and file_mounts into a bundle and
// uploads it unless the cluster has it, saying which on out (progress on
// a terminal goes to progress). It returns the bundle's digest, or "" when
// there is nothing to ship (no workdir, no file_mounts) or noUpload says
// the workdir is used in place. spec's Workdir must be resolved.
func shipCode(ctx context.Context, cl *apiClient, file string, spec *protocol.TaskSpec, noUpload bool, out, progress io.Writer, terminal bool) (string, error) {
	if noUpload {
		if len(spec.FileMounts) > 0 {
			return "", fmt.Errorf("%s:%d: file_mounts: they travel in the version's bundle, which --no-upload leaves out; put the files under the shared workdir instead, or drop --no-upload",
				file, spec.Lines["file_mounts"])
		}
		return "", nil
	}
	if spec.Workdir == "" && len(spec.FileMounts) == 0 {
		return "", nil
	}
	mounts, err := localMounts(file, spec)
	if err != nil {
		return "", err
	}
	started := time.Now()
	path, digest, size, m, err := bundle.PackFile(spec.Workdir, bundle.Options{Mounts: mounts}, "")
	if err != nil {
		// The error names the workdir or mount and the file in it.
		field := "workdir"
		if spec.Workdir == "" {
			field = "file_mounts"
		}
		return "", fmt.Errorf("%s:%d: %w", file, spec.Lines[field], err)
	}
	defer os.Remove(path)
	for _, s := range m.Skipped {
		fmt.Fprintf(progress, "warning: %s left out of the bundle (only files, directories and symlinks travel)\n", s)
	}
	what := fmt.Sprintf("%d files, %s", m.Files, bundle.HumanBytes(m.Bytes))
	have, err := cl.bundleExists(ctx, digest)
	if err != nil {
		return "", err
	}
	if have {
		fmt.Fprintf(out, "Code unchanged: bundle %s (%s) is already in the cluster, not uploaded\n", shortDigest(digest), what)
		return digest, nil
	}
	if err := cl.uploadBundle(ctx, path, digest, size, progress, terminal); err != nil {
		return "", err
	}
	took := time.Since(started)
	if took < time.Second {
		took = took.Round(time.Millisecond)
	} else {
		took = took.Round(100 * time.Millisecond)
	}
	fmt.Fprintf(out, "Uploaded bundle %s (%s; %s compressed) in %s\n", shortDigest(digest), what, bundle.HumanBytes(size), took)
	return digest, nil
}

// localMounts resolves the file_mounts' sources against the current
// directory (and ~), in the order of their targets, and checks that each
// exists, naming the task file's line when one does not.
func localMounts(file string, spec *protocol.TaskSpec) ([]bundle.Mount, error) {
	targets := make([]string, 0, len(spec.FileMounts))
	for t := range spec.FileMounts {
		targets = append(targets, t)
	}
	slices.Sort(targets)
	var mounts []bundle.Mount
	for _, t := range targets {
		src := spec.FileMounts[t]
		resolved := src
		if strings.HasPrefix(src, "~/") {
			home, err := os.UserHomeDir()
			if err != nil {
				return nil, fmt.Errorf("%s:%d: file_mounts.%s: %s: %w", file, spec.Lines["file_mounts."+t], t, src, err)
			}
			resolved = filepath.Join(home, src[2:])
		}
		if !filepath.IsAbs(resolved) {
			wd, err := os.Getwd()
			if err != nil {
				return nil, err
			}
			resolved = filepath.Join(wd, resolved)
		}
		if _, err := os.Stat(resolved); err != nil {
			why := "does not exist"
			if !errors.Is(err, os.ErrNotExist) {
				why = "cannot be read: " + err.Error()
			}
			return nil, fmt.Errorf("%s:%d: file_mounts.%s: source %s %s (a relative source is resolved against the current directory)", file, fieldLine(spec, "file_mounts", t), t, resolved, why)
		}
		mounts = append(mounts, bundle.Mount{Target: t, Source: resolved})
	}
	return mounts, nil
}

// fieldLine finds the line of a field the parser marked, trying the
// spellings it uses for keys with dots or slashes.
func fieldLine(spec *protocol.TaskSpec, section, key string) int {
	for _, k := range []string{section + "." + key, section + "." + fmt.Sprintf("%q", key)} {
		if l := spec.Lines[k]; l > 0 {
			return l
		}
	}
	return spec.Lines[section]
}

// bundleExists asks the coordinators whether the cluster holds digest
// (HEAD /v1/bundles/{digest}).
func (c *apiClient) bundleExists(ctx context.Context, digest string) (bool, error) {
	var tried []triedAddr
	for _, i := range c.order() {
		addr := c.addrs[i]
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		req, err := http.NewRequestWithContext(rctx, http.MethodHead, addr+"/v1/bundles/"+digest, nil)
		if err != nil {
			cancel()
			return false, fmt.Errorf("bad coordinator address %q: %w", addr, err)
		}
		c.authorize(req)
		resp, err := c.http.Do(req)
		cancel()
		if err != nil {
			tried = append(tried, triedAddr{addr, c.transportErr(addr, err)})
			continue
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			return true, nil
		case http.StatusNotFound:
			return false, nil
		case http.StatusUnauthorized:
			if c.token == "" {
				return false, fmt.Errorf("HEAD /v1/bundles/%s: no ACL token: the coordinator at %s has ACLs on; set $BATON_TOKEN or --token to a deploy token", shortDigest(digest), addr)
			}
			return false, fmt.Errorf("HEAD /v1/bundles/%s: the coordinator at %s does not know this ACL token: it was revoked or never created", shortDigest(digest), addr)
		case http.StatusForbidden:
			return false, fmt.Errorf("HEAD /v1/bundles/%s: the token may not upload code (it needs a deploy token)", shortDigest(digest))
		}
		tried = append(tried, triedAddr{addr, fmt.Errorf("HTTP %d", resp.StatusCode)})
	}
	return false, allFailedError(tried)
}

// uploadBundle PUTs the bundle in path to the first coordinator that
// takes it. An upload is named by its digest, so trying the next
// coordinator after any failure is safe.
func (c *apiClient) uploadBundle(ctx context.Context, path, digest string, size int64, progress io.Writer, terminal bool) error {
	client := &http.Client{Transport: c.http.Transport}
	if tr, ok := c.http.Transport.(*http.Transport); ok {
		tr = tr.Clone()
		tr.ResponseHeaderTimeout = uploadTimeout
		// With Expect: 100-continue a coordinator that refuses (no
		// token, too large, no quorum) or already holds the bundle
		// answers before any byte is sent.
		tr.ExpectContinueTimeout = 5 * time.Second
		client.Transport = tr
	}
	var tried []triedAddr
	for _, i := range c.order() {
		addr := c.addrs[i]
		err := c.uploadTo(ctx, client, addr, path, digest, size, progress, terminal)
		if err == nil {
			return nil
		}
		var rerr *requestError
		if errors.As(err, &rerr) && !rerr.foreign && rerr.status/100 == 4 {
			return err // refused for what it is: another coordinator would too
		}
		if ctx.Err() != nil {
			return err
		}
		tried = append(tried, triedAddr{addr, err})
	}
	return allFailedError(tried)
}

func (c *apiClient) uploadTo(ctx context.Context, client *http.Client, addr, path, digest string, size int64, progress io.Writer, terminal bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rctx, cancel := context.WithTimeout(ctx, uploadTimeout)
	defer cancel()
	counter := &countingReader{r: f}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		showProgress(progress, terminal, digest, counter, size, stop)
	}()
	defer func() { close(stop); <-done }()
	req, err := http.NewRequestWithContext(rctx, http.MethodPut, addr+"/v1/bundles/"+digest, counter)
	if err != nil {
		return fmt.Errorf("bad coordinator address %q: %w", addr, err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/gzip")
	req.Header.Set("Expect", "100-continue")
	c.authorize(req)
	resp, err := client.Do(req)
	if err != nil {
		return c.transportErr(addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	return nil
}

// authorize adds the ACL token, if any.
func (c *apiClient) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set(protocol.HeaderToken, c.token)
	}
}

// transportErr classifies a failed request as sendTo does.
func (c *apiClient) transportErr(addr string, err error) error {
	if isDialError(err) {
		return &unreachableError{addr: addr, err: unwrapURLError(err)}
	}
	return &transportError{addr: addr, err: err}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// showProgress redraws one line on a terminal until stop: how much of the
// bundle went out. Off a terminal it prints nothing.
func showProgress(w io.Writer, terminal bool, digest string, c *countingReader, size int64, stop <-chan struct{}) {
	if !terminal || size <= 0 {
		<-stop
		return
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	draw := func() {
		n := min(c.n.Load(), size)
		const width = 30
		filled := int(int64(width) * n / size)
		fmt.Fprintf(w, "\rUploading %s [%s%s] %s / %s %3d%%", shortDigest(digest),
			strings.Repeat("=", filled), strings.Repeat(" ", width-filled), bundle.HumanBytes(n), bundle.HumanBytes(size), 100*n/size)
	}
	for {
		select {
		case <-stop:
			draw()
			fmt.Fprintln(w)
			return
		case <-t.C:
			draw()
		}
	}
}

// shortDigest abbreviates a digest for people: "sha256:1a2b3c4d5e6f".
func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

// addNoUploadFlag adds --no-upload to serve up and update.
func addNoUploadFlag(cmd *cobra.Command, noUpload *bool) {
	cmd.Flags().BoolVar(noUpload, "no-upload", false,
		"use the workdir in place instead of uploading it: it must be an absolute path every agent shares (an NFS mount, say); for very large trees")
}
