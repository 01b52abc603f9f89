package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// streamCount is what the event-stream clients saw.
type streamCount struct {
	completed, cut int
	errors         []string
}

// runStreams keeps n clients reading server-sent event streams from url
// (5 events each) until ctx ends; a stream that ends early or fails is
// cut.
func runStreams(ctx context.Context, url string, n int) streamCount {
	var mu sync.Mutex
	var out streamCount
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// A stream in flight finishes even after ctx ends: cutting
				// it ourselves would count as a cut.
				err := readStream(client, url)
				mu.Lock()
				if err != nil {
					out.cut++
					if len(out.errors) < 5 {
						out.errors = append(out.errors, err.Error())
					}
				} else {
					out.completed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func readStream(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream: %s", resp.Status)
	}
	events := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			events++
		}
	}
	if events < 5 {
		return fmt.Errorf("stream ended after %d of 5 events (%v)", events, sc.Err())
	}
	return nil
}
