// Go peer for coring's benchmarks. Run it with GOMAXPROCS=1, as coring runs one scheduler on
// one thread.
//
//	go_peer micro [scale]   yield_rt / yield_switch: two goroutines calling runtime.Gosched()
//	                        in turn (ns per round trip = 2 switches, and per switch);
//	                        spawn_wait: wg.Add(1); go func() { wg.Done() }(); wg.Wait() (ns);
//	                        chan_rt: unbuffered chan ping-pong (ns per round trip)
//	go_peer parked [n]      n goroutines blocked receiving on one unbuffered chan: RSS per
//	                        goroutine (VmRSS delta), time to spawn them until all are blocked,
//	                        then close + wake all until every one has ended
//	go_peer sleep [n]       n goroutines each in time.Sleep(1s): wall time from the first spawn
//	                        until the last has woken, peak RSS (VmHWM)
//
// Output: RESULT<TAB>go<TAB><figure><TAB><value><TAB><unit>, the format of the C++ peers.
// Builds as a single file without a module: GO111MODULE=off go build -o OUT go_peer.go
package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

func report(figure string, value float64, unit string) {
	fmt.Printf("RESULT\tgo\t%s\t%.6g\t%s\n", figure, value, unit)
}

// statusKiB reads a "Name:   123 kB" field of /proc/self/status (-1 when missing).
func statusKiB(name string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if prefix := []byte(name + ":"); bytes.HasPrefix(line, prefix) {
			fields := bytes.Fields(line[len(prefix):])
			if len(fields) > 0 {
				if v, err := strconv.ParseInt(string(fields[0]), 10, 64); err == nil {
					return v
				}
			}
		}
	}
	return -1
}

func nsPer(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / float64(n) }

// yieldRoundTrip returns ns per round trip: n round trips are 2n Gosched calls.
func yieldRoundTrip(n int) float64 {
	var wg sync.WaitGroup
	yielder := func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			runtime.Gosched()
		}
	}
	start := time.Now()
	wg.Add(2)
	go yielder()
	go yielder()
	wg.Wait()
	return nsPer(time.Since(start), n)
}

func spawnWait(n int) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
		wg.Wait()
	}
	return nsPer(time.Since(start), n)
}

func chanRoundTrip(n int) float64 {
	ping := make(chan int)
	pong := make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	sum := 0
	start := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		sum += <-pong
	}
	ns := nsPer(time.Since(start), n)
	close(ping)
	if sum != n*(n-1)/2 {
		fmt.Fprintln(os.Stderr, "go_peer: values lost in the channel ping-pong")
		os.Exit(1)
	}
	return ns
}

func micro(scale float64) {
	yields, spawns, messages := int(2e6*scale), int(1e6*scale), int(1e6*scale)
	// Warm-up pass, results discarded.
	yieldRoundTrip(yields / 10)
	spawnWait(spawns / 10)
	chanRoundTrip(messages / 10)

	rt := yieldRoundTrip(yields)
	report("yield_rt", rt, "ns/round trip")
	report("yield_switch", rt/2, "ns/switch")
	report("spawn_wait", spawnWait(spawns), "ns/goroutine")
	report("chan_rt", chanRoundTrip(messages), "ns/round trip")
}

func parked(n int) {
	gate := make(chan struct{})
	var blocked, ended sync.WaitGroup
	runtime.GC()
	before := statusKiB("VmRSS")
	start := time.Now()
	blocked.Add(n)
	ended.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			blocked.Done()
			<-gate
			ended.Done()
		}()
	}
	// With one P the goroutine whose Done() releases us runs on into <-gate before we do; the
	// Gosched lets anything still runnable settle.
	blocked.Wait()
	runtime.Gosched()
	spawn := time.Since(start)
	after := statusKiB("VmRSS")
	wakeStart := time.Now()
	close(gate)
	ended.Wait()
	wake := time.Since(wakeStart)
	report("park_rss", float64(after-before)*1024/float64(n), "bytes/goroutine")
	report("park_spawn", spawn.Seconds()*1e3, "ms")
	report("park_wake", wake.Seconds()*1e3, "ms")
}

func sleepers(n int) {
	var awake sync.WaitGroup
	runtime.GC()
	before := statusKiB("VmRSS")
	start := time.Now()
	awake.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			time.Sleep(time.Second)
			awake.Done()
		}()
	}
	spawn := time.Since(start)
	awake.Wait()
	wall := time.Since(start)
	peak := statusKiB("VmHWM")
	report("sleep_wall", wall.Seconds()*1e3, "ms")
	report("sleep_spawn", spawn.Seconds()*1e3, "ms")
	report("sleep_peak_rss", float64(peak)/1024, "MiB")
	report("sleep_rss", float64(peak-before)*1024/float64(n), "bytes/goroutine")
}

func main() {
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	number := func(fallback float64) float64 {
		if len(os.Args) > 2 {
			if v, err := strconv.ParseFloat(os.Args[2], 64); err == nil && v > 0 {
				return v
			}
		}
		return fallback
	}
	switch mode {
	case "micro":
		micro(number(1))
	case "parked":
		parked(int(number(1e6)))
	case "sleep":
		sleepers(int(number(1e6)))
	default:
		fmt.Fprintln(os.Stderr, "usage: go_peer micro [scale] | parked [n] | sleep [n]")
		os.Exit(2)
	}
}
