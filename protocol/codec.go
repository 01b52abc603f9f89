package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// DecodeMessage decodes one JSON value from data into v, refusing a
// message over max bytes and any bytes after the value (other than
// whitespace). Unknown fields are allowed, so that a newer sender's
// messages still decode. The error matches ErrInvalidMessage.
func DecodeMessage(data []byte, max int, v any) error {
	if len(data) > max {
		return fmt.Errorf("%w: %d bytes; at most %d", ErrInvalidMessage, len(data), max)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: not JSON of the expected shape: %v", ErrInvalidMessage, err)
	}
	if err := ExpectEOF(dec); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	return nil
}

// ExpectEOF checks that a decoder has nothing but whitespace left after
// the value it decoded.
func ExpectEOF(dec *json.Decoder) error {
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("unexpected data after the JSON value: %v", err)
	default:
		return errors.New("unexpected data after the JSON value (send one JSON object)")
	}
}
