// The Go peer for the echo benchmark: a TCP echo server with one goroutine per connection,
// the idiomatic net.Conn Read/Write loop. Run with GOMAXPROCS=1 (one thread doing the work,
// like coring's single scheduler).
//
//	echo_server -port 7100
//
// Prints "listening on ADDR" once ready; runs until killed.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
)

func serve(conn net.Conn) {
	defer conn.Close()
	buffer := make([]byte, 4096)
	for {
		n, err := conn.Read(buffer)
		if n > 0 {
			if _, err := conn.Write(buffer[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	port := flag.Int("port", 7100, "TCP port on 127.0.0.1")
	flag.Parse()
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo_server:", err)
		os.Exit(1)
	}
	fmt.Println("listening on", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo_server: accept:", err)
			continue
		}
		go serve(conn)
	}
}
