// The Go peer of the HTTP client benchmark (scripts/bench.sh, section "client"): net/http's
// client with N goroutines, each doing keep-alive GETs of one URL in a loop for a fixed time,
// all through one Transport that keeps up to N connections to the host (MaxConnsPerHost and
// MaxIdleConnsPerHost N: one connection per goroutine, none closed for lack of an idle slot,
// as Go users configure it for a busy upstream). Every body is read to its end and closed,
// which is what hands the connection back for reuse; it is read into io.Discard (a pooled
// buffer, no allocation per response) and only its length is kept.
//
// Run it with GOMAXPROCS=1 (scripts/bench.sh does): the benchmark pins every client to one
// CPU, and one thread doing the work is what one coring container is. With more Ps than
// CPUs the runtime would only add hand-offs between threads on that CPU.
//
//	http_client -url http://127.0.0.1:8080/small.txt [-c 100] [-seconds 3] [-size 1024]
//	            [-cacert ca.pem]
//
// An https:// URL is fetched over TLS (section "tls"), verified against the CAs of -cacert
// (PEM; default: the system's store); each goroutine's connection makes one handshake and then
// keeps it, as coring's client does. HTTP/1.1 as with coring (a Transport with a TLS
// configuration of its own does not try HTTP/2, and the benchmark's nginx offers none).
//
// A request succeeds when it got status 200 and a body of exactly -size bytes (-size -1: any
// length). Prints one line,
//
//	requests=N failures=F seconds=S requests_per_s=R
//
// (N successes in S seconds of wall time, from the first request until every goroutine has
// finished its last one) and on stderr the first failure seen. Exits 1 when no request
// succeeded.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

type counts struct {
	ok, failed int64
	first      string // the first failure, for the log
}

func main() {
	url := flag.String("url", "", "the URL to GET")
	concurrency := flag.Int("c", 100, "goroutines, each with one keep-alive connection")
	seconds := flag.Float64("seconds", 3, "how long to send requests")
	size := flag.Int64("size", -1, "the expected body size in bytes (-1: any)")
	cacert := flag.String("cacert", "", "https: the CAs to verify the server with (PEM)")
	flag.Parse()
	if *url == "" || *concurrency <= 0 || *seconds <= 0 {
		fmt.Fprintln(os.Stderr, "usage: http_client -url URL [-c N] [-seconds S] [-size BYTES]")
		os.Exit(2)
	}

	transport := &http.Transport{
		MaxIdleConns:        *concurrency,
		MaxIdleConnsPerHost: *concurrency,
		MaxConnsPerHost:     *concurrency,
	}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		pool := x509.NewCertPool()
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "http_client: no CA certificate in %s: %v\n", *cacert, err)
			os.Exit(2)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	client := &http.Client{Transport: transport}

	var stop atomic.Bool
	results := make([]counts, *concurrency)
	var group sync.WaitGroup
	start := time.Now()
	timer := time.AfterFunc(time.Duration(*seconds*float64(time.Second)), func() { stop.Store(true) })
	for i := range results {
		group.Add(1)
		go func(mine *counts) {
			defer group.Done()
			for !stop.Load() {
				response, err := client.Get(*url)
				if err != nil {
					mine.fail(err.Error())
					continue
				}
				n, err := io.Copy(io.Discard, response.Body)
				response.Body.Close()
				switch {
				case err != nil:
					mine.fail("reading the body: " + err.Error())
				case response.StatusCode != http.StatusOK:
					mine.fail(fmt.Sprintf("status %d", response.StatusCode))
				case *size >= 0 && n != *size:
					mine.fail(fmt.Sprintf("a body of %d bytes, expected %d", n, *size))
				default:
					mine.ok++
				}
			}
		}(&results[i])
	}
	group.Wait()
	elapsed := time.Since(start).Seconds()
	timer.Stop()

	var total counts
	for _, c := range results {
		total.ok += c.ok
		total.failed += c.failed
		if total.first == "" {
			total.first = c.first
		}
	}
	if total.first != "" {
		fmt.Fprintf(os.Stderr, "http_client: %d failed requests; the first: %s\n", total.failed, total.first)
	}
	fmt.Printf("requests=%d failures=%d seconds=%.3f requests_per_s=%.0f\n", total.ok, total.failed,
		elapsed, float64(total.ok)/elapsed)
	if total.ok == 0 {
		os.Exit(1)
	}
}

func (c *counts) fail(what string) {
	c.failed++
	if c.first == "" {
		c.first = what
	}
}
