// Package admin is the one piece the original services did not have: an
// admin port answering 200 on /healthz and /readyz, so that whatever polls
// ours can poll the original too.
package admin

import (
	"net"
	"net/http"
)

// Serve listens on addr, serves in the background and returns the bound
// address (addr may ask for port 0).
func Serve(addr string) (net.Addr, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	go http.Serve(lis, mux)
	return lis.Addr(), nil
}
