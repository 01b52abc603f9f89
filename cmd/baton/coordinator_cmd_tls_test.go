package main

import (
	"strings"
	"testing"

	"github.com/baton-dev/baton/internal/tlsutil"
)

func TestCheckTLSFlags(t *testing.T) {
	tests := []struct {
		name    string
		files   tlsutil.Files
		wantErr string
	}{
		{name: "none", files: tlsutil.Files{}},
		{name: "all three", files: tlsutil.Files{CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}},
		{name: "CA alone", files: tlsutil.Files{CA: "ca.pem"}, wantErr: "--tls-ca given without --tls-cert and --tls-key: TLS needs all three"},
		{name: "no key", files: tlsutil.Files{CA: "ca.pem", Cert: "c.pem"}, wantErr: "--tls-ca and --tls-cert given without --tls-key"},
		{name: "no CA", files: tlsutil.Files{Cert: "c.pem", Key: "k.pem"}, wantErr: "--tls-cert and --tls-key given without --tls-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkTLSFlags(tt.files)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("error %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want %q in it", err, tt.wantErr)
			}
		})
	}
}
