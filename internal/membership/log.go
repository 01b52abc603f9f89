package membership

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/logutil"
)

// logWriter turns memberlist's log lines ("[WARN] memberlist: ...") into
// slog records: [ERR] at Error, [WARN] at Warn, the rest at Debug. A dead
// member makes memberlist repeat the same complaint on every probe and
// gossip round, so what the pool reports itself (a member failed) is
// enough: the complaints about reaching a member are Debug, and any other
// Error or Warn line goes out at most once per logEvery per kind (its
// first words), the rest at Debug. A message that failed decryption (a
// node with another gossip key, or none, or a stranger) is one kind,
// logged at Warn with a hint.
type logWriter struct {
	log     *slog.Logger
	limiter *logutil.Limiter
}

// logEvery is how often one kind of memberlist warning or error is logged
// at its own level.
const logEvery = 10 * time.Second

func newLogWriter(l *slog.Logger) *logWriter {
	return &logWriter{log: l, limiter: logutil.NewLimiter(logEvery)}
}

// quiet are the beginnings of memberlist messages that only say a member
// is unreachable; they are logged at Debug.
var quiet = []string{
	"Failed to send",
	"Failed fallback TCP ping",
	"Was able to connect",
	"Push/Pull with",
	"Failed UDP ping",
}

func (w *logWriter) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		level, msg := parseLogLine(line)
		if level == slog.LevelError && strings.HasPrefix(msg, "Conflicting address") {
			// A member restarted at another address before the old
			// one was declared failed; it is taken once that is.
			level = slog.LevelWarn
		}
		kind := logKind(msg)
		var args []any
		if keyMismatch(msg) {
			level, kind = slog.LevelWarn, "key mismatch"
			args = []any{"hint", "a node with another gossip key or none tried to talk to this one; every member needs the same key"}
		}
		if level > slog.LevelDebug {
			for _, q := range quiet {
				if strings.HasPrefix(msg, q) {
					level = slog.LevelDebug
					break
				}
			}
		}
		if level > slog.LevelDebug {
			if ok, held := w.limiter.Allow(kind); !ok {
				level = slog.LevelDebug
			} else if held > 0 {
				args = append(args, "similar_held_back", held)
			}
		}
		w.log.Log(context.Background(), level, "memberlist: "+msg, args...)
	}
	return len(b), nil
}

// keyMismatch reports whether msg is memberlist's complaint about a
// message it could not decrypt, or a plain one where encryption is on,
// or the reverse.
func keyMismatch(msg string) bool {
	return (strings.HasPrefix(msg, "failed to receive:") || strings.HasPrefix(msg, "Decrypt packet failed")) &&
		strings.Contains(strings.ToLower(msg), "crypt")
}

// parseLogLine splits "[LEVEL] memberlist: message" into a level and the
// message.
func parseLogLine(line string) (slog.Level, string) {
	level := slog.LevelDebug
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			switch line[1:end] {
			case "ERR", "ERROR":
				level = slog.LevelError
			case "WARN":
				level = slog.LevelWarn
			}
			line = strings.TrimSpace(line[end+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, line
}

// logKind is the first three words of a message: the same complaint about
// another node or address has the same kind.
func logKind(msg string) string {
	f := strings.Fields(msg)
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}
