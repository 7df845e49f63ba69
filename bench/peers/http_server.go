// The Go peer of the HTTP benchmark: net/http's server (a goroutine per connection, keep-alive,
// pipelined requests answered in order) with one handler that answers "Hello, World!" as
// text/plain. Run with GOMAXPROCS=1 (scripts/bench.sh sets it): one thread doing the work, like
// one coring worker.
//
//	http_server -port 7200
//
// Prints "listening on ADDR" once ready; runs until killed.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

var body = []byte("Hello, World!")

func hello(w http.ResponseWriter, r *http.Request) {
	// Set as the map entry: the canonical name, no allocation of a new slice per request.
	w.Header()["Content-Type"] = []string{"text/plain"}
	w.Write(body)
}

func main() {
	port := flag.Int("port", 7200, "TCP port on 127.0.0.1")
	flag.Parse()
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "http_server:", err)
		os.Exit(1)
	}
	fmt.Println("listening on", listener.Addr())
	server := &http.Server{Handler: http.HandlerFunc(hello)}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "http_server:", err)
		os.Exit(1)
	}
}
