package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// StreamResult is what event-stream clients saw.
type StreamResult struct {
	// Completed and Cut count streams that delivered every event and
	// streams that ended early or failed.
	Completed, Cut int
	// Errors holds up to five cuts, for the report.
	Errors []string
}

// Streams keeps clients reading server-sent event streams from url, each
// expected to deliver events "data:" lines and end, until ctx ends. A
// stream already open when ctx ends is read to its end (ending it
// ourselves would count as a cut). At most maxStreams streams are read
// in all.
func Streams(ctx context.Context, url string, clients, events, maxStreams int) StreamResult {
	var mu sync.Mutex
	var out StreamResult
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	started := 0
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				if started >= maxStreams {
					mu.Unlock()
					return
				}
				started++
				mu.Unlock()
				err := readStream(client, url, events)
				mu.Lock()
				if err != nil {
					out.Cut++
					if len(out.Errors) < 5 {
						out.Errors = append(out.Errors, time.Now().Format("15:04:05.000")+": "+err.Error())
					}
				} else {
					out.Completed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

func readStream(client *http.Client, url string, events int) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream: %s", resp.Status)
	}
	got := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			got++
		}
	}
	if got < events {
		return fmt.Errorf("stream ended after %d of %d events (%v)", got, events, sc.Err())
	}
	return nil
}
